//! `NAMEKO_SWEEP=pool:1,pool:16,driver,…`: Nameko's client set up each of
//! those ways, against a Nameko service (c) and a shimeji service (d), both
//! `max_workers` 10 with persistent replies; setups alternate round by
//! round. The best is what the full bench should use (`NAMEKO_C64`), so
//! that Nameko's figure is Nameko's ceiling, not the harness's.

use crate::measure::Record;
use crate::nameko::{self, ClientSetup};
use crate::report::Knobs;

/// Runs the sweep and prints its table. The shimeji service `benchecho10p`
/// must be running.
pub fn run(python: &str, knobs: &Knobs, setups: &[ClientSetup]) {
    let services = nameko::start_services(python, &[10]);
    // Sequential calls are the same whatever the setup: a few only.
    let counts = (50, knobs.calls64 / knobs.nameko_share);
    let mut records: Vec<(Record, Record)> = setups
        .iter()
        .map(|s| {
            (
                Record::new(format!("(c) {}", s.describe()), ""),
                Record::new(format!("(d) {}", s.describe()), ""),
            )
        })
        .collect();
    for round in 1..=knobs.rounds {
        for (setup, (c, d)) in setups.iter().zip(&mut records) {
            eprintln!("round {round}: {}", setup.describe());
            c.push(nameko::bench(python, "pybench10", counts, setup));
            d.push(nameko::bench(python, "benchecho10p", counts, setup));
        }
        eprintln!("round {round}/{} done", knobs.rounds);
    }
    for child in services {
        nameko::stop(child);
    }
    println!(
        "\nNameko's client, {} calls with 64 in flight, medians of {} rounds; \
         servers: max_workers 10, persistent replies",
        counts.1, knobs.rounds
    );
    println!(
        "(NAMEKO_SWEEP={} ROUNDS={} CALLS64={} NAMEKO_SHARE={} cargo bench --bench amqp)\n",
        setups
            .iter()
            .map(|s| if s.procs > 1 {
                format!("{}x{}", s.mode, s.procs)
            } else {
                s.mode.clone()
            })
            .collect::<Vec<_>>()
            .join(","),
        knobs.rounds,
        knobs.calls64,
        knobs.nameko_share
    );
    println!(
        "| NAMEKO_C64 | how | (c) → Nameko, calls/s | rounds | (d) → shimeji, calls/s | rounds |"
    );
    println!("|---|---|---:|---|---:|---|");
    for (setup, (c, d)) in setups.iter().zip(&records) {
        let name = if setup.procs > 1 {
            format!("{}x{}", setup.mode, setup.procs)
        } else {
            setup.mode.clone()
        };
        println!(
            "| {name} | {} | {:.0} | {} | {:.0} | {} |",
            setup.describe(),
            c.medians().c64,
            c.rounds_note(),
            d.medians().c64,
            d.rounds_note()
        );
    }
}
