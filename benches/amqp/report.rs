//! The bench's knobs and its report: the machine, the command that
//! reproduces the run, the wire settings of each side, and the tables.

use std::process::Command;
use std::time::Duration;

use crate::common::env_usize;
use crate::measure::Record;
use crate::raw::ServerSettings;

/// What a run was asked for, from the environment.
pub struct Knobs {
    pub rounds: usize,
    pub calls: usize,
    pub calls64: usize,
    pub events: usize,
    pub nameko_share: usize,
    pub nameko_c64: String,
    pub skip_nameko: bool,
    pub skip_startup: bool,
    /// The machine's load average (1 min) when the run started.
    pub load_at_start: String,
}

impl Knobs {
    pub fn from_env() -> Self {
        Knobs {
            rounds: env_usize("ROUNDS", 3),
            calls: env_usize("CALLS", 2_000),
            calls64: env_usize("CALLS64", 10_000),
            events: env_usize("EVENTS", 10_000),
            nameko_share: env_usize("NAMEKO_SHARE", 4).max(1),
            nameko_c64: std::env::var("NAMEKO_C64").unwrap_or_else(|_| "driver".into()),
            skip_nameko: std::env::var("SKIP_NAMEKO").is_ok(),
            skip_startup: std::env::var("SKIP_STARTUP").is_ok(),
            load_at_start: load_average(),
        }
    }

    /// The command that runs the bench again with these knobs.
    pub fn command(&self) -> String {
        let mut c = format!(
            "ROUNDS={} CALLS={} CALLS64={} EVENTS={} NAMEKO_SHARE={} NAMEKO_C64={}",
            self.rounds, self.calls, self.calls64, self.events, self.nameko_share, self.nameko_c64
        );
        if self.skip_nameko {
            c.push_str(" SKIP_NAMEKO=1");
        }
        if self.skip_startup {
            c.push_str(" SKIP_STARTUP=1");
        }
        c + " cargo bench --bench amqp"
    }
}

/// Time to the first reply and idle RSS (KiB) of a greeter process.
pub type Startup = Result<(Duration, u64), String>;

/// Everything measured.
pub struct Results<'a> {
    pub knobs: &'a Knobs,
    pub settings: &'a [ServerSettings],
    pub a: &'a [Record],
    pub b: &'a [Record],
    pub naive: &'a Record,
    /// (c) per Nameko `max_workers`, and (d); `None` when Nameko was not run.
    pub c: Option<(&'a [Record], &'a Record)>,
    pub nameko_workers: &'a [u16],
    pub events: (&'a Record, &'a Record),
    pub startup: Option<(Startup, Option<Startup>)>,
}

/// What every side does on the wire, the same for each of its rows.
const WIRE: &str = "\
wire settings (both (a) and (b), whatever max_workers and reply persistence):
  requests: persistent (delivery mode 2), `mandatory`, on a channel without confirms;
            empty headers (no caller context), JSON body {\"args\": [..], \"kwargs\": {}}
  service queue: durable `rpc-NAME`, basic.qos prefetch = max_workers, manual acks;
            each request acked once its reply is confirmed, acks coalesced
            (one basic.ack multiple per batch, sent while the previous one is on its way)
  replies: persistent or transient as the row says, not mandatory, publisher confirms,
            spread over 4 confirm channels taken in turn
  reply queue: durable, x-expires 300 s; consumed with no_ack (replies not acked)
  connections: one for the caller, one per serving side; heartbeat 60 s
Nameko (c), and its client in (d): requests persistent, mandatory, with publisher
  confirms; replies persistent with confirms (Nameko has no setting for either);
  each reply acked by the caller; prefetch = max_workers; request acked after its
  reply is confirmed, one ack per request";

/// The 1-minute load average, from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let rabbit = Command::new("rabbitmqctl")
        .arg("version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let date = Command::new("date")
        .args(["-u", "+%F %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), RabbitMQ {rabbit} on the same machine, {date}")
}

fn row(r: &Record) {
    let f = r.medians();
    println!(
        "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        r.name,
        r.settings,
        f.seq,
        f.p50,
        f.p99,
        f.c64,
        r.rounds_note()
    );
}

fn ratio_row(name: &str, settings: &str, x: &Record, y: &Record) {
    println!(
        "| {name} | {settings} | {:.2} | {:.2} |",
        x.ratio_to(y, |f| f.seq),
        x.ratio_to(y, |f| f.c64)
    );
}

pub fn print(r: &Results) {
    let k = r.knobs;
    println!("\nmachine: {}", machine());
    println!(
        "load average (1 min, other work on the machine included): {} at the start, {} at the end",
        k.load_at_start,
        load_average()
    );
    println!("command: {}\n", k.command());
    println!("{WIRE}\n");
    println!(
        "RPC over RabbitMQ, medians of {} rounds: {} sequential calls, {} with 64 in flight \
         (Nameko's client: a {}th of that); `rounds` = rounds that succeeded\n",
        k.rounds, k.calls, k.calls64, k.nameko_share
    );
    println!("| contender | settings | seq calls/s | p50 µs | p99 µs | c64 calls/s | rounds |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for (a, b) in r.a.iter().zip(r.b) {
        row(a);
        row(b);
    }
    row(r.naive);
    if let Some((c, d)) = r.c {
        for c in c {
            row(c);
        }
        row(d);
    }
    println!("\nratios: the median of each round's ratio\n");
    println!("| ratio | settings | sequential | 64 in flight |");
    println!("|---|---|---:|---:|");
    if let Some((c, d)) = r.c {
        for (i, w) in r.nameko_workers.iter().enumerate() {
            let same = r
                .settings
                .iter()
                .position(|s| s.max_workers == *w && s.persistent_replies);
            if let Some(j) = same {
                let what = format!("like for like: max_workers {w}, persistent replies on both");
                let name = if i == 0 { "**(b) / (c)**" } else { "(b) / (c)" };
                ratio_row(name, &what, &r.b[j], &c[i]);
            }
        }
        for (i, w) in r.nameko_workers.iter().enumerate() {
            if let Some(j) = r
                .settings
                .iter()
                .position(|s| s.max_workers == *w && !s.persistent_replies)
            {
                let what = format!(
                    "NOT like for like: shimeji's transient replies vs Nameko's persistent, max_workers {w}"
                );
                ratio_row("(b) / (c)", &what, &r.b[j], &c[i]);
            }
        }
        ratio_row(
            "(d) / (c)",
            "Nameko's client on both; max_workers 10, persistent replies",
            d,
            &c[0],
        );
    }
    for (i, s) in r.settings.iter().enumerate() {
        ratio_row("(b) / (a)", &s.describe(), &r.b[i], &r.a[i]);
    }
    if let Some(j) = r
        .settings
        .iter()
        .position(|s| s.max_workers == 64 && !s.persistent_replies)
    {
        ratio_row(
            "(b) / naive raw",
            "NOT like for like: (b) 64t against naive's prefetch 64, persistent replies",
            &r.b[j],
            r.naive,
        );
    }
    let (ev_raw, ev_ours) = r.events;
    let (x, y) = (ev_raw.medians().seq, ev_ours.medians().seq);
    println!(
        "\nevents with publisher confirms, one at a time ({} per round): raw {x:.0}/s ({}), \
         shimeji {y:.0}/s ({}), ratio {:.2} (median of each round's)",
        k.events,
        ev_raw.rounds_note(),
        ev_ours.rounds_note(),
        ev_ours.ratio_to(ev_raw, |f| f.seq)
    );
    if let Some((ours, theirs)) = &r.startup {
        let show = |who: &str, s: &Startup| match s {
            Ok((t, rss)) => println!(
                "{who}: first reply {:.0} ms after start, idle RSS {:.1} MB",
                t.as_secs_f64() * 1e3,
                *rss as f64 / 1024.0
            ),
            Err(e) => println!("{who}: FAILED: {e}"),
        };
        show("greeter example", ours);
        if let Some(theirs) = theirs {
            show("nameko run greeter", theirs);
        }
    }
}
