//! Measuring a contender, and keeping every round's outcome: a round that
//! failed stays in the record and is flagged in the table, never dropped
//! from it silently.

use futures::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{median, Figures};

/// One call of a contender: `Ok` when the echo came back right.
pub type Call = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How long one contender's measurement may take before the round counts
/// as failed for it.
pub const LIMIT: Duration = Duration::from_secs(60);

/// `Ok` when `value` is the echo of `"Ada"` every bench call sends.
pub fn check_echo(value: serde_json::Value) -> Result<(), String> {
    if value == "Ada" {
        Ok(())
    } else {
        Err(format!("wrong reply: {value}"))
    }
}

/// Sequential calls with per-call latency, then `calls64` with 64 in
/// flight; a tenth of each count first, unmeasured, as warm-up.
pub async fn measure(calls: usize, calls64: usize, call: Call) -> Result<Figures, String> {
    let run = async {
        let (seq, p50, p99) = sequential(calls, &call).await?;
        let c64 = concurrent(calls64, &call).await?;
        Ok(Figures { seq, p50, p99, c64 })
    };
    tokio::time::timeout(LIMIT, run)
        .await
        .map_err(|_| format!("not done within {LIMIT:?}"))?
}

async fn sequential(calls: usize, call: &Call) -> Result<(f64, f64, f64), String> {
    for _ in 0..calls / 10 {
        call().await?;
    }
    let mut lat = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        call().await?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let total = start.elapsed();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    Ok((calls as f64 / total.as_secs_f64(), p(0.50), p(0.99)))
}

async fn concurrent(calls: usize, call: &Call) -> Result<f64, String> {
    let run = |n: usize| {
        let counter = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (counter, call) = (counter.clone(), call.clone());
                tokio::spawn(async move {
                    while counter.fetch_add(1, Ordering::Relaxed) < n {
                        call().await?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.map_err(|e| e.to_string())??;
            }
            Ok::<(), String>(())
        }
    };
    run(calls / 10).await?;
    let start = Instant::now();
    run(calls).await?;
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

/// A contender's outcome in every round.
pub struct Record {
    /// Its name in the tables.
    pub name: String,
    /// Its settings, written next to its figures.
    pub settings: String,
    rounds: Vec<Result<Figures, String>>,
}

impl Record {
    /// A contender not measured yet.
    pub fn new(name: impl Into<String>, settings: impl Into<String>) -> Self {
        Record {
            name: name.into(),
            settings: settings.into(),
            rounds: Vec::new(),
        }
    }

    /// Keeps a round's outcome, and says at once when it failed.
    pub fn push(&mut self, outcome: Result<Figures, String>) {
        if let Err(e) = &outcome {
            eprintln!(
                "FAILED: {} in round {}: {e}",
                self.name,
                self.rounds.len() + 1
            );
        }
        self.rounds.push(outcome);
    }

    /// Each figure's median over the rounds that succeeded.
    pub fn medians(&self) -> Figures {
        let ok: Vec<&Figures> = self.rounds.iter().filter_map(|r| r.as_ref().ok()).collect();
        let m = |f: fn(&Figures) -> f64| median(ok.iter().map(|x| f(x)).collect());
        Figures {
            seq: m(|f| f.seq),
            p50: m(|f| f.p50),
            p99: m(|f| f.p99),
            c64: m(|f| f.c64),
        }
    }

    /// The median over rounds of `f(self) / f(other)`, each round's
    /// figures against the same round's (contenders run one after the
    /// other within a round, so a slow spell of the machine hits both);
    /// rounds where either failed are left out (and flagged in the table).
    pub fn ratio_to(&self, other: &Record, f: fn(&Figures) -> f64) -> f64 {
        let ratios = self
            .rounds
            .iter()
            .zip(&other.rounds)
            .filter_map(|(x, y)| Some(f(x.as_ref().ok()?) / f(y.as_ref().ok()?)))
            .collect();
        median(ratios)
    }

    /// `3/3`, or `2/3 FAILED in round 2` when a round failed.
    pub fn rounds_note(&self) -> String {
        let ok = self.rounds.iter().filter(|r| r.is_ok()).count();
        let failed: Vec<String> = self
            .rounds
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_err())
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if failed.is_empty() {
            format!("{ok}/{}", self.rounds.len())
        } else {
            format!(
                "{ok}/{} **FAILED in round {}**",
                self.rounds.len(),
                failed.join(", ")
            )
        }
    }

    /// Every round's figures, for the log.
    pub fn each_round(&self) -> String {
        self.rounds
            .iter()
            .map(|r| match r {
                Ok(f) => format!("{:.0}/{:.0}", f.seq, f.c64),
                Err(_) => "failed".to_string(),
            })
            .collect::<Vec<_>>()
            .join("  ")
    }
}
