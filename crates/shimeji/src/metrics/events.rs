//! Events published, by source and event type, and the event types
//! services declare: the only ones made at run time that get a series.

use super::errors::OTHER;
use super::{global, lock, read, write};
use std::borrow::Cow;
use std::sync::atomic::Ordering;

/// Records the event types service `source` declares it dispatches: an
/// event type made at run time gets a series of its own only when declared.
pub(crate) fn declare_events(source: &'static str, event_types: Vec<String>) {
    let mut all = lock(&global().declared_events);
    for event_type in event_types {
        if !all.iter().any(|(s, t)| *s == source && *t == event_type) {
            all.push((source, event_type));
        }
    }
}

/// Counts one event published. An event type is a label value when it is
/// written in the code (borrowed) or declared by its service
/// (`#[service(events = [...])]`); any other counts as `other`.
#[allow(clippy::ptr_arg)]
pub(crate) fn event_dispatched(source: &'static str, event_type: &Cow<'static, str>) {
    if count_dispatched(source, event_type) {
        return;
    }
    let label = match event_type {
        Cow::Borrowed(_) => event_type.clone(),
        Cow::Owned(t) => {
            let declared = lock(&global().declared_events)
                .iter()
                .any(|(s, d)| *s == source && d == t);
            if declared {
                event_type.clone()
            } else {
                Cow::Borrowed(OTHER)
            }
        }
    };
    if count_dispatched(source, &label) {
        return;
    }
    write(&global().dispatched)
        .entry(source)
        .or_default()
        .entry(label)
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

/// Counts one event in an existing series; false when there is none.
fn count_dispatched(source: &'static str, event_type: &str) -> bool {
    match read(&global().dispatched)
        .get(source)
        .and_then(|types| types.get(event_type))
    {
        Some(n) => {
            n.fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}
