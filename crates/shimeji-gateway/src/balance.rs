//! Power of two choices: of two instances drawn at random, the one with
//! fewer requests in flight. As good as "least loaded" without every
//! request herding to the same instance, and O(1) in the pool size but for
//! skipping ejected instances.

use std::sync::Arc;

use crate::upstream::Upstream;

/// An instance of `pool` to send to at `now` (a [`crate::eject::now_ms`]):
/// never an ejected one, and not `exclude` (the instance a retry comes
/// from). `None` when no instance is left.
pub(crate) fn pick(
    pool: &[Arc<Upstream>],
    exclude: Option<&Upstream>,
    now: u64,
) -> Option<Arc<Upstream>> {
    let usable = |u: &Arc<Upstream>| {
        !u.ejection.is_ejected(now) && exclude.map_or(true, |x| !std::ptr::eq(x, u.as_ref()))
    };
    let count = pool.iter().filter(|u| usable(u)).count();
    let nth = |n: usize| pool.iter().filter(|u| usable(u)).nth(n).cloned();
    match count {
        0 => None,
        1 => nth(0),
        _ => {
            let first = fastrand::usize(..count);
            // A second draw among the others: never the same instance twice.
            let mut second = fastrand::usize(..count - 1);
            if second >= first {
                second += 1;
            }
            let (a, b) = (nth(first)?, nth(second)?);
            Some(if b.in_flight() < a.in_flight() { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pool(n: usize) -> Vec<Arc<Upstream>> {
        (0..n)
            .map(|i| {
                Arc::new(
                    Upstream::new(&format!("i{i}"), &format!("127.0.0.1:{}", 1000 + i)).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn empty_and_single_pools() {
        assert!(pick(&[], None, 0).is_none());
        let one = pool(1);
        assert_eq!(pick(&one, None, 0).unwrap().instance_id, "i0");
        assert!(
            pick(&one, Some(&one[0]), 0).is_none(),
            "a retry needs another instance"
        );
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        let two = pool(2);
        let _busy: Vec<_> = (0..5).map(|_| two[0].start()).collect();
        for _ in 0..50 {
            assert_eq!(pick(&two, None, 0).unwrap().instance_id, "i1");
        }
    }

    #[test]
    fn ejected_and_excluded_instances_are_skipped() {
        let three = pool(3);
        for _ in 0..3 {
            three[0]
                .ejection
                .record_failure(10, 3, Duration::from_secs(1));
        }
        for _ in 0..50 {
            let picked = pick(&three, Some(&three[1]), 20).unwrap();
            assert_eq!(picked.instance_id, "i2");
        }
        assert!(pick(&three, None, 2000).is_some());
    }

    #[test]
    fn load_spreads_over_the_pool() {
        let four = pool(4);
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            let picked = pick(&four, None, 0).unwrap();
            let i: usize = picked.instance_id[1..].parse().unwrap();
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}
