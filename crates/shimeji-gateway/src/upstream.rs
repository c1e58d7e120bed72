//! The instances the gateway sends to: one [`Upstream`] per instance
//! address, kept from one routing table to the next so that its in-flight
//! count and its ejection survive a table change.

use http::uri::Authority;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::eject::Ejection;

/// One instance, as the gateway reaches it.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// The instance id the registry knows it by.
    pub(crate) instance_id: String,
    /// A number no other upstream of this process has: what connection
    /// pools key it by.
    pub(crate) number: u64,
    /// Where it serves HTTP: `host:port`.
    pub(crate) authority: Authority,
    /// What a sticky cookie holds to name it (a hash of its instance id,
    /// the same in every gateway).
    pub(crate) token: String,
    /// Requests sent to it whose response has not ended.
    in_flight: AtomicUsize,
    /// Its connect failure streak.
    pub(crate) ejection: Ejection,
}

impl Upstream {
    /// An instance at `address`; `None` when that is no `host:port`.
    pub(crate) fn new(instance_id: &str, address: &str) -> Option<Upstream> {
        let authority: Authority = address.parse().ok()?;
        authority.port_u16()?;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Some(Upstream {
            instance_id: instance_id.to_string(),
            number: NEXT.fetch_add(1, Ordering::Relaxed),
            authority,
            token: token(instance_id),
            in_flight: AtomicUsize::new(0),
            ejection: Ejection::default(),
        })
    }

    /// Requests in flight to it.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight until the guard is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One request in flight to an upstream.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Upstream>);

impl InFlight {
    /// The upstream.
    pub(crate) fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stable, opaque name of an instance: FNV-1a of its id, in hex.
fn token(instance_id: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in instance_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The upstreams of the last table, by instance id and address.
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    known: HashMap<(String, String), Arc<Upstream>>,
}

impl Upstreams {
    /// The upstream of `instance_id` at `address`: the one the last table
    /// had, else a new one. `None` when the address is unusable.
    pub(crate) fn get(
        &self,
        next: &mut Upstreams,
        instance_id: &str,
        address: &str,
    ) -> Option<Arc<Upstream>> {
        let key = (instance_id.to_string(), address.to_string());
        if let Some(upstream) = next.known.get(&key) {
            return Some(upstream.clone());
        }
        let upstream = match self.known.get(&key) {
            Some(upstream) => upstream.clone(),
            None => Arc::new(Upstream::new(instance_id, address)?),
        };
        next.known.insert(key, upstream.clone());
        Some(upstream)
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_have_a_port() {
        assert!(Upstream::new("a", "127.0.0.1:8000").is_some());
        assert!(Upstream::new("a", "users.internal:80").is_some());
        assert!(Upstream::new("a", "127.0.0.1").is_none());
        assert!(Upstream::new("a", "not an address").is_none());
    }

    #[test]
    fn tokens_are_stable_and_distinct() {
        assert_eq!(token("users-1"), token("users-1"));
        assert_ne!(token("users-1"), token("users-2"));
        assert_eq!(token("").len(), 16);
    }

    #[test]
    fn upstreams_survive_a_rebuild_and_go_with_their_instance() {
        let first = Upstreams::default();
        let mut next = Upstreams::default();
        let a = first.get(&mut next, "a", "127.0.0.1:1").unwrap();
        let _guard = a.start();
        let mut third = Upstreams::default();
        let again = next.get(&mut third, "a", "127.0.0.1:1").unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.in_flight(), 1);
        let moved = next.get(&mut third, "a", "127.0.0.1:2").unwrap();
        assert!(!Arc::ptr_eq(&a, &moved), "a new address is a new upstream");
        assert_eq!(third.len(), 2);
    }
}
