//! The collector that renders shimeji's own metrics on every scrape: it
//! reads every series of the process and writes the families of the table
//! in [`metrics`](super).

use super::client::CallMetrics;
use super::errors::Errors;
use super::histogram::Snapshot;
use super::websocket::WebSocketClose;
use super::{global, lock, read};
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::atomic::Ordering;
use std::sync::Weak;

/// Runs by outcome: `ok` (every run but the failed ones), then each error type.
fn outcomes(duration: &Snapshot, errors: &Errors) -> Vec<(&'static str, u64)> {
    let errors = errors.snapshot();
    let failed: u64 = errors.iter().map(|(_, n)| n).sum();
    let ok = duration.count().saturating_sub(failed);
    std::iter::once(("ok", ok)).chain(errors).collect()
}

/// Renders shimeji's own metrics on every scrape.
#[derive(Debug)]
pub(super) struct Collector;

fn counter(encoder: &mut MetricEncoder, value: u64) -> Result<(), std::fmt::Error> {
    encoder.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut MetricEncoder, value: i64) -> Result<(), std::fmt::Error> {
    encoder.encode_gauge(&value)
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = global();
        let entrypoints = lock(&g.entrypoints).clone();
        let runs: Vec<Snapshot> = entrypoints.iter().map(|m| m.snapshot()).collect();

        let mut e = encoder.encode_descriptor(
            "shimeji_entrypoint_calls",
            "Entrypoint runs by outcome: ok, or the error's type",
            None,
            MetricType::Counter,
        )?;
        for (m, runs) in entrypoints.iter().zip(&runs) {
            for (outcome, n) in outcomes(runs, &m.errors) {
                let labels = [
                    ("service", m.service),
                    ("entrypoint", m.entrypoint),
                    ("outcome", outcome),
                ];
                counter(&mut e.encode_family(&labels)?, n)?;
            }
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_entrypoint_duration",
            "How long entrypoint runs took",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (m, runs) in entrypoints.iter().zip(&runs) {
            let labels = [("service", m.service), ("entrypoint", m.entrypoint)];
            runs.encode(&mut e.encode_family(&labels)?)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_entrypoint_in_flight",
            "Entrypoint runs in progress now, all instances",
            None,
            MetricType::Gauge,
        )?;
        for (m, runs) in entrypoints.iter().zip(&runs) {
            let labels = [("service", m.service), ("entrypoint", m.entrypoint)];
            let n = i64::try_from(runs.in_flight()).unwrap_or(i64::MAX);
            gauge(&mut e.encode_family(&labels)?, n)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_events_handled",
            "Event handler runs by outcome",
            None,
            MetricType::Counter,
        )?;
        for (m, runs) in entrypoints.iter().zip(&runs) {
            let Some((source, event_type)) = m.event else {
                continue;
            };
            for (outcome, n) in outcomes(runs, &m.errors) {
                let labels = [
                    ("service", m.service),
                    ("handler", m.entrypoint),
                    ("source", source),
                    ("event_type", event_type),
                    ("outcome", outcome),
                ];
                counter(&mut e.encode_family(&labels)?, n)?;
            }
        }

        // Workers, summed over the instances of each service.
        let mut workers: Vec<(&'static str, [usize; 3])> = Vec::new();
        for instance in lock(&g.instances).iter().filter_map(Weak::upgrade) {
            let (busy, max, waiting) = instance.workers();
            let service = instance.service();
            match workers.iter_mut().find(|(s, _)| *s == service) {
                Some((_, sum)) => {
                    sum[0] += busy;
                    sum[1] += max;
                    sum[2] += waiting;
                }
                None => workers.push((service, [busy, max, waiting])),
            }
        }
        for (i, (name, help)) in [
            ("shimeji_workers_busy", "Workers running now, all instances"),
            ("shimeji_workers_max", "max_workers, summed over instances"),
            (
                "shimeji_workers_waiting",
                "Work waiting for a free worker: above zero, the service is saturated",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (service, values) in &workers {
                let labels = [("service", *service)];
                gauge(
                    &mut e.encode_family(&labels)?,
                    i64::try_from(values[i]).unwrap_or(i64::MAX),
                )?;
            }
        }

        let calls: Vec<&'static CallMetrics> = read(&g.calls)
            .values()
            .flat_map(|methods| methods.values().copied())
            .collect();
        // A client's calls: those it timed, and those the entrypoint it
        // called timed for it (in-process calls served inline).
        let timed: Vec<Snapshot> = calls
            .iter()
            .map(|c| {
                let served = entrypoints
                    .iter()
                    .find(|m| m.service == c.service && m.entrypoint == c.method);
                match served {
                    Some(m) => Snapshot::of(&[&c.duration, &m.inline]),
                    None => c.duration.snapshot(),
                }
            })
            .collect();
        let mut e = encoder.encode_descriptor(
            "shimeji_client_calls",
            "Calls made by clients of this process, by outcome",
            None,
            MetricType::Counter,
        )?;
        for (m, timed) in calls.iter().zip(&timed) {
            for (outcome, n) in outcomes(timed, &m.errors) {
                let labels = [
                    ("service", m.service.as_ref()),
                    ("method", m.method.as_ref()),
                    ("outcome", outcome),
                ];
                counter(&mut e.encode_family(&labels)?, n)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "shimeji_client_call_duration",
            "How long calls took, as the caller saw it",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (m, timed) in calls.iter().zip(&timed) {
            let labels = [
                ("service", m.service.as_ref()),
                ("method", m.method.as_ref()),
            ];
            timed.encode(&mut e.encode_family(&labels)?)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_events_dispatched",
            "Events published",
            None,
            MetricType::Counter,
        )?;
        for (source, types) in read(&g.dispatched).iter() {
            for (event_type, n) in types {
                let labels = [("source", *source), ("event_type", event_type.as_ref())];
                counter(&mut e.encode_family(&labels)?, n.load(Ordering::Relaxed))?;
            }
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_transport_reconnects",
            "Reconnections after the broker connection was lost",
            None,
            MetricType::Counter,
        )?;
        for (transport, n) in lock(&g.reconnects).iter() {
            counter(&mut e.encode_family(&[("transport", *transport)])?, *n)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_transport_messages_dropped",
            "Messages a transport gave up on, by reason",
            None,
            MetricType::Counter,
        )?;
        for ((transport, reason), n) in lock(&g.dropped).iter() {
            let labels = [("transport", *transport), ("reason", *reason)];
            counter(&mut e.encode_family(&labels)?, *n)?;
        }

        let mut e = encoder.encode_descriptor(
            "shimeji_websocket_closed",
            "WebSockets closed, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in WebSocketClose::ALL.iter().zip(&g.websocket_closed) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                counter(&mut e.encode_family(&[("reason", reason.label())])?, n)?;
            }
        }
        Ok(())
    }
}
