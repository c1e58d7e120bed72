//! Reading a Prometheus scrape (`shimeji::metrics::render()`, `/metrics`).

/// The value of the sample line `series value` in a scrape, where `series`
/// is the whole series: its name and its labels, as rendered.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
