//! Criterion benchmarks of the embedded transport.
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! * `rpc/direct`: calling the method on the struct, the floor;
//! * `rpc/typed`: the generated client, one call at a time;
//! * `rpc/dynamic_json`: the dynamic client, JSON in and out;
//! * `rpc/typed_64_in_flight`: 64 tasks calling at once (time per call);
//! * `events/dispatch_to_handled`: dispatch until the handler has run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use shimeji::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

mod common;

use common::{Greeter, GreeterClient};

/// Counts handled events and wakes the bench when a target is reached.
#[derive(Clone, Default)]
struct Counter {
    handled: Arc<AtomicUsize>,
    target: Arc<AtomicUsize>,
    done: Arc<Notify>,
}

#[derive(Dependencies)]
struct Listener {
    counter: Counter,
}

#[service(name = "listener")]
impl Listener {
    #[event_handler("greeter", "greeted")]
    async fn on_greeted(&self, _payload: serde_json::Value) {
        let c = &self.counter;
        if c.handled.fetch_add(1, Ordering::AcqRel) + 1 == c.target.load(Ordering::Acquire) {
            c.done.notify_one();
        }
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let counter = Counter::default();
    let running = rt.block_on(async {
        ServiceRunner::with_config(Config::new())
            .service(Greeter)
            .service(Listener {
                counter: counter.clone(),
            })
            .start()
            .await
            .expect("services start")
    });
    let greeter: GreeterClient = running.client();
    let client = running.dynamic_client();

    let mut rpc = c.benchmark_group("rpc");
    rpc.throughput(Throughput::Elements(1));
    rpc.bench_function("direct", |b| {
        b.to_async(&rt)
            .iter(|| async { Greeter.hello("Ada".into()).await })
    });
    rpc.bench_function("typed", |b| {
        b.to_async(&rt)
            .iter(|| async { greeter.hello("Ada".into()).await.expect("call") })
    });
    rpc.bench_function("dynamic_json", |b| {
        b.to_async(&rt).iter(|| async {
            client
                .call("greeter", "hello", json!({"name": "Ada"}))
                .await
                .expect("call")
        })
    });
    rpc.bench_function("typed_64_in_flight", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let greeter = greeter.clone();
            async move {
                let per_task = iters.div_ceil(64);
                let start = Instant::now();
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        let g = greeter.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                g.hello("Ada".into()).await.expect("call");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
                start
                    .elapsed()
                    .div_f64((per_task * 64) as f64 / iters as f64)
            }
        })
    });
    rpc.finish();

    let dispatcher = running.event_dispatcher("greeter");
    let mut events = c.benchmark_group("events");
    events.throughput(Throughput::Elements(1));
    events.measurement_time(Duration::from_secs(5));
    events.bench_function("dispatch_to_handled", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let counter = counter.clone();
            let dispatcher = dispatcher.clone();
            async move {
                counter.handled.store(0, Ordering::Release);
                counter.target.store(iters as usize, Ordering::Release);
                let done = counter.done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                let start = Instant::now();
                for _ in 0..iters {
                    dispatcher
                        .dispatch("greeted", json!({"name": "Ada"}))
                        .await
                        .expect("dispatch");
                }
                if counter.handled.load(Ordering::Acquire) < iters as usize {
                    done.await;
                }
                start.elapsed()
            }
        })
    });
    events.finish();
    rt.block_on(running.stop());
}

criterion_group!(memory, benches);
criterion_main!(memory);
