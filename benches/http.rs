//! A hello-world HTTP entrypoint against a plain axum handler doing the same
//! work, loaded by wrk on loopback, alternating, medians of the rounds.
//!
//! ```text
//! cargo bench --bench http            # needs wrk (apt-get install wrk)
//! ROUNDS=5 SECONDS=10 cargo bench --bench http
//! ```

use axum::routing::get;
use shimeji::prelude::*;
use std::process::Command;

#[derive(Default, Dependencies)]
struct Hello;

#[service(name = "hello")]
impl Hello {
    #[http(GET, "/hello")]
    async fn hello(&self) -> &'static str {
        "Hello, world!"
    }
}

mod common;

use common::{env_usize, median};

/// Runs wrk against `url`; requests per second.
fn wrk(url: &str, seconds: usize) -> f64 {
    let out = Command::new("wrk")
        .args(["-t1", "-c64", &format!("-d{seconds}s"), url])
        .output()
        .expect("wrk not found: apt-get install wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output: {text}"))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("http bench: run with `cargo bench --bench http`");
        return;
    }
    let rounds = env_usize("ROUNDS", 3);
    let seconds = env_usize("SECONDS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let (ours, ours_url) = rt.block_on(async {
        let running =
            ServiceRunner::with_config(Config::new().set("WEB_SERVER_ADDRESS", "127.0.0.1:0"))
                .service(Hello)
                .start()
                .await
                .expect("start");
        let url = format!("http://{}/hello", running.web_address().unwrap());
        (running, url)
    });
    let plain_url = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hello", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/hello", get(|| async { "Hello, world!" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    });
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        a.push(wrk(&plain_url, seconds));
        b.push(wrk(&ours_url, seconds));
        eprintln!(
            "round {round}/{rounds}: axum {:.0} req/s, shimeji {:.0} req/s",
            a[round - 1],
            b[round - 1]
        );
    }
    let (a, b) = (median(a), median(b));
    println!("\nGET /hello, wrk -t1 -c64 -d{seconds}s on loopback, medians of {rounds} rounds\n");
    println!("| server | requests/s |");
    println!("|---|---:|");
    println!("| plain axum handler | {a:.0} |");
    println!("| shimeji #[http] entrypoint | {b:.0} |");
    println!("\nshimeji / axum: {:.2} (target >= 0.8)", b / a);
    rt.block_on(ours.stop());
}
