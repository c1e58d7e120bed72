//! What the side-by-side benches share: knobs from the environment, and
//! medians of rounds, and the greeter the in-process benches call.
#![allow(dead_code)]

use shimeji::prelude::*;

/// The service the in-process benches call: `greeter.hello(name)`.
#[derive(Default)]
pub struct Greeter;

#[service(name = "greeter")]
impl Greeter {
    /// Says hello.
    #[rpc]
    pub async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

/// A number from the environment, or `default`.
pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `xs` (NaN for none).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One contender's figures in one round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    /// Calls per second, one at a time.
    pub seq: f64,
    /// Median latency of those calls, µs.
    pub p50: f64,
    /// 99th percentile latency, µs.
    pub p99: f64,
    /// Calls per second with 64 in flight.
    pub c64: f64,
}

/// Each figure's median over the rounds.
pub fn medians(rounds: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| median(rounds.iter().map(f).collect());
    Figures {
        seq: m(|f| f.seq),
        p50: m(|f| f.p50),
        p99: m(|f| f.p99),
        c64: m(|f| f.c64),
    }
}
