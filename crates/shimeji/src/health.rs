//! Liveness and readiness of a set of running services.
//!
//! *Live*: the process answers. *Ready*: every service has started, none is
//! draining, and the transport is connected (on AMQP, not while it
//! reconnects). With `METRICS_ADDRESS` set, `/health/live` and
//! `/health/ready` serve these: 200 when true, 503 with the reason when not,
//! a JSON body either way.
//!
//! ```
//! # use shimeji::prelude::*;
//! # #[derive(Default, Dependencies)] struct Greeter;
//! # #[service(name = "greeter")]
//! # impl Greeter { #[rpc] async fn hello(&self) {} }
//! # async fn demo() -> Result<(), StartError> {
//! let running = ServiceRunner::new().service(Greeter).start().await?;
//! let health = running.health();
//! assert!(health.readiness().ready);
//! running.stop().await;
//! assert!(!health.readiness().ready);
//! # Ok(()) }
//! ```

use serde::Serialize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::transport::Transport;

/// Where a set of services is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Stage {
    /// Services are starting.
    Starting = 0,
    /// Every service has started and takes work.
    Serving = 1,
    /// Stopping: no new work, the work in flight finishes.
    Draining = 2,
    /// Stopped.
    Stopped = 3,
}

/// Whether the services are ready for work, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Ready for work.
    pub ready: bool,
    /// The services' stage.
    pub stage: Stage,
    /// The transport's name (`memory`, `amqp`).
    pub transport: &'static str,
    /// Whether the transport is connected.
    pub transport_connected: bool,
}

/// The health of a set of running services; cheap to clone.
#[derive(Clone)]
pub struct Health {
    stage: Arc<AtomicU8>,
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Health").field(&self.readiness()).finish()
    }
}

impl Health {
    pub(crate) fn new(transport: Arc<dyn Transport>) -> Self {
        Health {
            stage: Arc::new(AtomicU8::new(Stage::Starting as u8)),
            transport,
        }
    }

    pub(crate) fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Release);
    }

    /// The services' stage.
    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Acquire) {
            0 => Stage::Starting,
            1 => Stage::Serving,
            2 => Stage::Draining,
            _ => Stage::Stopped,
        }
    }

    /// Live: the process answers. Always true while it can be asked.
    pub fn live(&self) -> bool {
        true
    }

    /// Ready: serving, and the transport connected.
    pub fn readiness(&self) -> Readiness {
        let stage = self.stage();
        let transport_connected = self.transport.is_connected();
        Readiness {
            ready: stage == Stage::Serving && transport_connected,
            stage,
            transport: self.transport.name(),
            transport_connected,
        }
    }
}
