//! Services that record the events they handle, to check where events go:
//! which handler type reaches which services and instances.

use serde_json::Value;
use std::sync::{Arc, Mutex};

/// What the services made by [`event_log_service!`] handled: (label,
/// instance number, payload), in the order they handled it.
pub type EventLog = Arc<Mutex<Vec<(&'static str, usize, Value)>>>;

/// Defines service struct `$ty`, named `$name`, with the fields
/// `instance: usize` and `log: EventLog`, and one event handler, method
/// `$method`, that pushes `($label, instance, payload)` onto the log. The
/// tokens after the method name are the arguments of its
/// `#[event_handler]`: source service, event type, handler type…
///
/// ```ignore
/// support::event_log_service!(Pool, "pool", "pool", handle, "shop", "sold");
/// ```
macro_rules! event_log_service {
    ($ty:ident, $name:literal, $label:literal, $method:ident, $($attr:tt)*) => {
        #[derive(::shimeji::Dependencies)]
        struct $ty {
            instance: usize,
            log: $crate::support::EventLog,
        }

        #[::shimeji::service(name = $name)]
        impl $ty {
            #[event_handler($($attr)*)]
            async fn $method(&self, payload: ::serde_json::Value) {
                self.log.lock().unwrap().push(($label, self.instance, payload));
            }
        }
    };
}

pub(crate) use event_log_service;
