//! Entrypoint waiters: a test's way to wait for work it triggered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

use crate::container::{Finished, Waiters};

/// Waits for an entrypoint to finish; see [`RunningServices::entrypoint_waiter`](super::RunningServices::entrypoint_waiter).
pub struct EntrypointWaiter {
    service: String,
    entrypoint: String,
    finished: broadcast::Receiver<Finished>,
    waiters: Arc<Waiters>,
}

impl EntrypointWaiter {
    /// A waiter for the next run of `service.entrypoint` that `waiters`
    /// announce from now on.
    pub(crate) fn new(waiters: Arc<Waiters>, service: &str, entrypoint: &str) -> Self {
        let finished = waiters.finished.subscribe();
        waiters.watching.fetch_add(1, Ordering::Relaxed);
        EntrypointWaiter {
            service: service.to_string(),
            entrypoint: entrypoint.to_string(),
            finished,
            waiters,
        }
    }

    /// Resolves with the first matching run that finishes within `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Result<Finished, WaitTimeout> {
        let matching = async {
            loop {
                match self.finished.recv().await {
                    Ok(f) if f.service == self.service && f.entrypoint == self.entrypoint => {
                        return Some(f)
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        match tokio::time::timeout(timeout, matching).await {
            Ok(Some(f)) => Ok(f),
            _ => Err(WaitTimeout {
                service: self.service.clone(),
                entrypoint: self.entrypoint.clone(),
                timeout,
            }),
        }
    }
}

impl Drop for EntrypointWaiter {
    fn drop(&mut self) {
        self.waiters.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The entrypoint did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("`{service}.{entrypoint}` did not finish within {timeout:?}")]
pub struct WaitTimeout {
    /// The service waited on.
    pub service: String,
    /// The entrypoint waited on.
    pub entrypoint: String,
    /// The timeout that ran out.
    pub timeout: Duration,
}
