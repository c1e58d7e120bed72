//! RPC and events over RabbitMQ, side by side in one bounded run:
//!
//! * (a) a raw amqprs client and server doing on the wire exactly what
//!   shimeji does (`raw`), with each serving setting (b) is run with;
//! * (b) a shimeji client calling a shimeji service, with `max_workers` 10
//!   or 64 and persistent or transient replies;
//! * the naive raw client and server (`naive`): persistent replies, each
//!   reply acked, one confirm channel; an extra row, not the baseline;
//! * (c) Nameko's client calling a Nameko service with `max_workers` 10
//!   (Nameko's default) and 64 (replies persistent: Nameko's only way);
//! * (d) Nameko's client calling the shimeji service set up as (c):
//!   `max_workers` 10, persistent replies;
//! * events with publisher confirms, raw vs `EventDispatcher`;
//! * start to first reply and idle RSS of the greeter example vs `nameko run`.
//!
//! ```text
//! cargo bench --bench amqp                       # 3 rounds, medians
//! ROUNDS=5 CALLS=3000 CALLS64=20000 cargo bench --bench amqp
//! ```
//!
//! Knobs: ROUNDS, CALLS (sequential), CALLS64 (64 in flight), EVENTS,
//! NAMEKO_SHARE (Nameko runs CALLS/NAMEKO_SHARE, default 4: it is slow),
//! NAMEKO_C64 (how Nameko's client keeps 64 in flight: `pool:N`, `pool:NxK`,
//! `window`, or `driver`, the default: a Nameko service calling through its
//! `RpcProxy`; see `interop/bench_nameko.py`; sequential calls always go
//! through one `ClusterRpcProxy`), SKIP_NAMEKO,
//! SKIP_STARTUP. `NAMEKO_SWEEP=pool:1,pool:16,driver,…` measures only
//! Nameko's client set up each of those ways, against (c) and (d).
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); the Nameko contenders
//! need `interop/setup.sh` (run on first use). Each round runs every
//! contender in turn, so noise hits all alike; figures are medians of the
//! rounds, and a contender that failed in a round is flagged.

use serde_json::{json, Value};
use shimeji::prelude::*;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

mod acks;
#[path = "../common/mod.rs"]
mod common;
mod measure;
mod naive;
mod nameko;
mod raw;
mod rawside;
mod report;
mod sweep;
mod wire;

use common::Figures;
use measure::{check_echo, measure, Call, Record, LIMIT};
use raw::ServerSettings;
use rawside::{RawSide, NAIVE_PREFETCH};

macro_rules! echo_service {
    ($ty:ident, $name:literal) => {
        #[derive(Default, Dependencies)]
        struct $ty;

        #[service(name = $name)]
        impl $ty {
            #[rpc]
            async fn echo(&self, value: Value) -> Value {
                value
            }
        }
    };
}

// One shimeji service per serving setting, in the order of `SETTINGS`.
echo_service!(Echo10p, "benchecho10p");
echo_service!(Echo10t, "benchecho10t");
echo_service!(Echo64p, "benchecho64p");
echo_service!(Echo64t, "benchecho64t");

/// The serving settings (a) and (b) run with. The first is Nameko's:
/// `max_workers` 10, persistent replies.
const SETTINGS: [ServerSettings; 4] = [
    ServerSettings {
        max_workers: 10,
        persistent_replies: true,
    },
    ServerSettings {
        max_workers: 10,
        persistent_replies: false,
    },
    ServerSettings {
        max_workers: 64,
        persistent_replies: true,
    },
    ServerSettings {
        max_workers: 64,
        persistent_replies: false,
    },
];

/// The `max_workers` of the Nameko services (c) calls.
const NAMEKO_WORKERS: [u16; 2] = [10, 64];

macro_rules! shimeji_call {
    ($client:expr) => {{
        let client = $client;
        let call: Call = Arc::new(move || {
            let c = client.clone();
            Box::pin(
                async move { check_echo(c.echo(json!("Ada")).await.map_err(|e| e.to_string())?) },
            )
        });
        call
    }};
}

/// A shimeji service runner with `settings` (requests stay persistent).
async fn shimeji_service<S: Service + Default>(settings: ServerSettings) -> RunningServices {
    let config = Config::new()
        .set("AMQP_URI", wire::uri())
        .set("max_workers", settings.max_workers)
        .set("persistent_replies", settings.persistent_replies)
        .set("persistent_requests", true);
    ServiceRunner::with_config(config)
        .service(S::default())
        .start()
        .await
        .expect("shimeji service")
}

/// Events with publisher confirms, one at a time.
async fn events<F, Fut>(n: usize, publish: F) -> Result<Figures, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let all = async {
        for _ in 0..n {
            publish().await?;
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(LIMIT, all)
        .await
        .map_err(|_| format!("not done within {LIMIT:?}"))??;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    Ok(Figures {
        seq: rate,
        p50: f64::NAN,
        p99: f64::NAN,
        c64: f64::NAN,
    })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` builds and runs this once; the bench needs a broker and --bench.
        println!("amqp bench: run with `cargo bench --bench amqp`");
        return;
    }
    let knobs = report::Knobs::from_env();
    let _ = Command::new("rabbitmqctl")
        .args(["add_vhost", wire::VHOST])
        .output();
    let _ = Command::new("rabbitmqctl")
        .args([
            "set_permissions",
            "-p",
            wire::VHOST,
            "guest",
            ".*",
            ".*",
            ".*",
        ])
        .output();
    let python = match nameko::python().and_then(|p| match knobs.skip_nameko {
        true => Err("SKIP_NAMEKO is set".to_string()),
        false => Ok(p),
    }) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("Nameko contenders NOT MEASURED: {e}");
            None
        }
    };
    let nameko_client = nameko::ClientSetup::parse(&knobs.nameko_c64);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Connections close from their destructors, which need the runtime.
    let _entered = rt.enter();
    if let Ok(list) = std::env::var("NAMEKO_SWEEP") {
        let python = python.expect("the sweep needs Nameko");
        let setups: Vec<_> = list.split(',').map(nameko::ClientSetup::parse).collect();
        let service = rt.block_on(shimeji_service::<Echo10p>(SETTINGS[0]));
        sweep::run(&python, &knobs, &setups);
        rt.block_on(service.stop());
        return;
    }

    // (b) shimeji services, one per setting, and the client side.
    let (services, client_side) = rt.block_on(async {
        let services = vec![
            shimeji_service::<Echo10p>(SETTINGS[0]).await,
            shimeji_service::<Echo10t>(SETTINGS[1]).await,
            shimeji_service::<Echo64p>(SETTINGS[2]).await,
            shimeji_service::<Echo64t>(SETTINGS[3]).await,
        ];
        let client_side = ServiceRunner::with_config(Config::new().set("AMQP_URI", wire::uri()))
            .start()
            .await
            .expect("shimeji client");
        (services, client_side)
    });
    let ours: [Call; 4] = [
        shimeji_call!(client_side.client::<Echo10pClient>()),
        shimeji_call!(client_side.client::<Echo10tClient>()),
        shimeji_call!(client_side.client::<Echo64pClient>()),
        shimeji_call!(client_side.client::<Echo64tClient>()),
    ];
    let nameko_services = match &python {
        Some(py) => nameko::start_services(py, &NAMEKO_WORKERS),
        None => Vec::new(),
    };

    let mut a: Vec<Record> = SETTINGS
        .iter()
        .map(|s| Record::new(format!("(a) raw, like shimeji, {}", s.tag()), s.describe()))
        .collect();
    let mut b: Vec<Record> = SETTINGS
        .iter()
        .map(|s| Record::new(format!("(b) shimeji, {}", s.tag()), s.describe()))
        .collect();
    let mut naive_rec = Record::new(
        "naive raw: persistent replies, acks each reply, one confirm channel",
        format!("prefetch {NAIVE_PREFETCH}, persistent replies, one ack per request"),
    );
    let client_note = nameko_client.describe();
    let mut c: Vec<Record> = NAMEKO_WORKERS
        .iter()
        .map(|w| {
            Record::new(
                format!("(c) Nameko → Nameko, {w}p"),
                format!("max_workers {w}, persistent replies; client: {client_note}"),
            )
        })
        .collect();
    let mut d = Record::new(
        "(d) Nameko → shimeji, 10p",
        format!("{}; client: {client_note}", SETTINGS[0].describe()),
    );
    let mut ev_raw = Record::new("events, raw", "persistent, confirm awaited");
    let mut ev_ours = Record::new(
        "events, shimeji EventDispatcher",
        "persistent, confirm awaited",
    );

    let (calls, calls64) = (knobs.calls, knobs.calls64);
    let nameko_counts = (calls / knobs.nameko_share, calls64 / knobs.nameko_share);
    for round in 1..=knobs.rounds {
        let raw_side = rt.block_on(RawSide::open(&SETTINGS));
        if let Err(e) = &raw_side {
            eprintln!("round {round}: the raw contenders could not start: {e}");
        }
        let raws = raw_side.as_ref();
        for i in 0..SETTINGS.len() {
            eprintln!("round {round}: {}", a[i].name);
            a[i].push(match raws {
                Ok(r) => rt.block_on(measure(calls, calls64, r.calls[i].clone())),
                Err(e) => Err(e.clone()),
            });
            eprintln!("round {round}: {}", b[i].name);
            b[i].push(rt.block_on(measure(calls, calls64, ours[i].clone())));
        }
        eprintln!("round {round}: naive raw");
        naive_rec.push(match raws {
            Ok(r) => rt.block_on(measure(calls, calls64, r.naive.clone())),
            Err(e) => Err(e.clone()),
        });
        if let Some(py) = &python {
            for (i, w) in NAMEKO_WORKERS.iter().enumerate() {
                eprintln!("round {round}: {}", c[i].name);
                c[i].push(nameko::bench(
                    py,
                    &format!("pybench{w}"),
                    nameko_counts,
                    &nameko_client,
                ));
            }
            eprintln!("round {round}: {}", d.name);
            d.push(nameko::bench(
                py,
                "benchecho10p",
                nameko_counts,
                &nameko_client,
            ));
        }
        eprintln!("round {round}: events");
        ev_raw.push(match raws {
            Ok(r) => rt.block_on(events(knobs.events, || r.publish_event())),
            Err(e) => Err(e.clone()),
        });
        ev_ours.push(rt.block_on(async {
            let dispatcher = client_side.event_dispatcher("benchecho");
            events(knobs.events, || async {
                dispatcher
                    .dispatch("tick", json!({"n": 1}))
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        }));
        if let Ok(r) = raw_side {
            rt.block_on(r.close());
        }
        let all = a.iter().chain(&b).chain([&naive_rec]).chain(&c).chain([&d]);
        for r in all {
            eprintln!("  {:<70} {}", r.name, r.each_round());
        }
        eprintln!("round {round}/{} done", knobs.rounds);
    }
    for child in nameko_services {
        nameko::stop(child);
    }

    // Start-up and idle memory: the greeter example vs `nameko run` of the same service.
    let startup = (!knobs.skip_startup).then(|| {
        rt.block_on(async {
            let client = client_side.dynamic_client();
            let ours = match nameko::build_greeter() {
                Ok(exe) => {
                    let child = Command::new(exe)
                        .env("AMQP_URI", wire::uri())
                        .stdout(std::process::Stdio::null())
                        .spawn()
                        .expect("greeter");
                    nameko::start_to_reply(&client, child).await
                }
                Err(e) => Err(e),
            };
            let theirs = match &python {
                Some(py) => {
                    let child = nameko::run(py, "greeter", "config.yaml", &[]);
                    Some(nameko::start_to_reply(&client, child).await)
                }
                None => None,
            };
            (ours, theirs)
        })
    });

    report::print(&report::Results {
        knobs: &knobs,
        settings: &SETTINGS,
        a: &a,
        b: &b,
        naive: &naive_rec,
        c: python.as_ref().map(|_| (&c[..], &d)),
        nameko_workers: &NAMEKO_WORKERS,
        events: (&ev_raw, &ev_ours),
        startup,
    });
    rt.block_on(async {
        for s in services {
            s.stop().await;
        }
        client_side.stop().await;
    });
}
