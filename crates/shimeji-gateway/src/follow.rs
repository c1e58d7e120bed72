//! Following the registry: every new table becomes a new routing table,
//! swapped in whole, and only then is its revision reported.
//!
//! Two tasks: one builds and swaps (it never waits for the registry, so
//! routing follows at once), the other reports the latest applied
//! revision, trying again while the registry cannot be reached. A stopping
//! instance waits for that report before it closes its listener: once it
//! sees the gateway's revision at or past its deregistration, no request
//! can be routed to it any more (a try that had already picked it and finds
//! it closed goes to another instance, see [`crate::retry`]).

use shimeji::registry::{Revision, RouterReporter, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::proxy::Shared;
use crate::routes::Builder;

/// How long to wait before reporting again after a report failed.
const REPORT_RETRY: Duration = Duration::from_millis(500);
/// How long one report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The two tasks.
pub(crate) struct Following {
    stop: CancellationToken,
    follow: JoinHandle<()>,
    report: JoinHandle<RouterReporter>,
}

impl Following {
    /// Starts applying `watcher`'s tables to `shared` and reporting them
    /// with `reporter`.
    pub(crate) fn start(
        watcher: Watcher,
        builder: Builder,
        shared: Arc<Shared>,
        reporter: RouterReporter,
    ) -> Following {
        let stop = CancellationToken::new();
        let (applied, reports) = watch::channel(0);
        Following {
            follow: tokio::spawn(follow(watcher, builder, shared, applied, stop.clone())),
            report: tokio::spawn(report(reporter, reports, stop.clone())),
            stop,
        }
    }

    /// Stops both; the reporter, to be stopped by the caller (`None` when
    /// its task failed).
    pub(crate) async fn stop(self) -> Option<RouterReporter> {
        self.stop.cancel();
        if let Err(error) = self.follow.await {
            tracing::warn!(%error, "the registry follower failed");
        }
        match self.report.await {
            Ok(reporter) => Some(reporter),
            Err(error) => {
                tracing::warn!(%error, "the revision reporter failed");
                None
            }
        }
    }
}

/// Builds and swaps a routing table for every table of the watcher.
async fn follow(
    watcher: Watcher,
    mut builder: Builder,
    shared: Arc<Shared>,
    applied: watch::Sender<Revision>,
    stop: CancellationToken,
) {
    let mut tables = watcher.subscribe();
    loop {
        let table = tables.borrow_and_update().clone();
        // Until the first listing, the table is empty for want of reading.
        if table.lists > 0 {
            let built = builder.build(&table);
            tracing::debug!(
                revision = built.revision,
                instances = built.instances,
                routes = built.paths(),
                connected = built.connected,
                "routing table applied"
            );
            shared.routes.store(Arc::new(built));
            applied.send_if_modified(|r| {
                let changed = *r != table.revision;
                *r = table.revision;
                changed
            });
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = tables.changed() => if changed.is_err() { break },
        }
    }
    drop(watcher);
}

/// Reports the latest applied revision, again and again until it is
/// written.
async fn report(
    reporter: RouterReporter,
    mut applied: watch::Receiver<Revision>,
    stop: CancellationToken,
) -> RouterReporter {
    loop {
        let revision = *applied.borrow_and_update();
        let reported = tokio::time::timeout(REPORT_TIMEOUT, reporter.report(revision)).await;
        let wait_for_change = match reported {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, revision, "cannot report the applied revision: trying again");
                false
            }
            Err(_) => {
                tracing::warn!(
                    revision,
                    "reporting the applied revision timed out: trying again"
                );
                false
            }
        };
        if wait_for_change {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = applied.changed() => if changed.is_err() { break },
            }
        } else {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(REPORT_RETRY) => {}
            }
        }
    }
    reporter
}
