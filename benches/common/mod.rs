//! What the side-by-side benches share: knobs from the environment, and
//! medians of rounds, and the greeter the in-process benches call.
#![allow(dead_code)]

use shimeji::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The service the in-process benches call: `greeter.hello(name)`.
#[derive(Default, Dependencies)]
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

/// Runs `call` `calls` times one after another, timing each call.
pub async fn sequential<F, Fut>(calls: usize, call: F) -> (f64, f64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..calls / 10 {
        call().await;
    }
    let mut lat = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let total = start.elapsed();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    (calls as f64 / total.as_secs_f64(), p(0.50), p(0.99))
}

/// Runs `calls` calls from 64 concurrent tasks; each task owns a clone of
/// `state` so that no reference count is shared between the calls.
pub async fn concurrent<S, F, Fut>(calls: usize, state: S, call: F) -> f64
where
    S: Clone + Send + 'static,
    F: Fn(S) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = S> + Send,
{
    concurrent_logged(calls, state, call, None).await
}

/// [`concurrent`], each task logging through `logs` (its tracing
/// dispatcher for its whole life) when given.
pub async fn concurrent_logged<S, F, Fut>(
    calls: usize,
    state: S,
    call: F,
    logs: Option<tracing::Dispatch>,
) -> f64
where
    S: Clone + Send + 'static,
    F: Fn(S) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = S> + Send,
{
    use tracing::instrument::WithSubscriber;
    let run = |n: usize| {
        let counter = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let counter = counter.clone();
                let mut state = state.clone();
                let task = async move {
                    while counter.fetch_add(1, Ordering::Relaxed) < n {
                        state = call(state).await;
                    }
                };
                match &logs {
                    Some(logs) => tokio::spawn(task.with_subscriber(logs.clone())),
                    None => tokio::spawn(task),
                }
            })
            .collect();
        async move {
            for t in tasks {
                t.await.expect("bench task panicked");
            }
        }
    };
    run(calls / 10).await;
    let start = Instant::now();
    run(calls).await;
    calls as f64 / start.elapsed().as_secs_f64()
}

/// Calls per second of `call` run `calls` times one after another, with no
/// clock reading per call (after a warm-up of a tenth as many).
pub async fn throughput<F, Fut>(calls: usize, call: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..calls / 10 {
        call().await;
    }
    let start = Instant::now();
    for _ in 0..calls {
        call().await;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

/// The median and 99th percentile latency of `calls` calls of `call` one
/// after another, in µs: two clock readings per call.
pub async fn latencies<F, Fut>(calls: usize, call: F) -> (f64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    (p(0.50), p(0.99))
}
