//! The embedded transport: every service in one process, no broker.
//!
//! RPC requests go to one instance of the service, round robin, and run on
//! the caller's task: no queue, no thread hop, no serialization for typed
//! clients. Events go to queues named as Nameko names them; each queue hands
//! an event to one of its consumers on a task of its own. A durable queue
//! (`reliable_delivery`) keeps events while it has no consumer and hands them
//! over when one comes back.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use shimeji::{ServiceRunner, transport::MemoryTransport};
//!
//! // The runner uses a fresh MemoryTransport unless told otherwise; share one
//! // between runners to let them call each other.
//! let transport = MemoryTransport::new();
//! let running = ServiceRunner::new().transport(transport.clone()).start().await?;
//! running.stop().await;
//! # Ok(()) }
//! ```

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{
    event_queue_name, Endpoint, Event, HandlerError, Request, ServiceHandler, Serving, Transport,
    TransportError,
};
use crate::context::WorkerContext;
use crate::entrypoint::EventHandlerSpec;
use crate::error::CallError;
use crate::payload::Payload;
use crate::sync::lock;

/// The in-process transport. Clones share one broker.
#[derive(Clone, Default)]
pub struct MemoryTransport {
    broker: Arc<Broker>,
}

#[derive(Default)]
struct Broker {
    /// Service name → its serving instances. Read lock-free on every call;
    /// a short list beats hashing the name.
    rpc: ArcSwap<Vec<(String, Arc<RpcRoute>)>>,
    /// Serializes changes to `rpc`.
    rpc_changes: Mutex<()>,
    events: Mutex<EventQueues>,
}

struct RpcRoute {
    consumers: Vec<(String, Arc<dyn ServiceHandler>)>,
    next: AtomicUsize,
}

#[derive(Default)]
struct EventQueues {
    queues: HashMap<String, EventQueue>,
}

struct EventQueue {
    source: String,
    event_type: String,
    /// Deleted when its last consumer leaves (`reliable_delivery = false`,
    /// and broadcast queues).
    auto_delete: bool,
    consumers: Vec<EventConsumer>,
    next: usize,
    /// Events that arrived while no consumer was there.
    backlog: VecDeque<Event>,
}

#[derive(Clone)]
struct EventConsumer {
    queue: Arc<str>,
    instance_id: String,
    spec: &'static EventHandlerSpec,
    handler: Arc<dyn ServiceHandler>,
}

impl MemoryTransport {
    /// A new, empty in-process broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names of the services that have at least one serving instance.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .broker
            .rpc
            .load()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Events waiting in queue `queue` for a consumer.
    pub fn backlog(&self, queue: &str) -> usize {
        lock(&self.broker.events)
            .queues
            .get(queue)
            .map_or(0, |q| q.backlog.len())
    }
}

fn deliver(broker: Arc<Broker>, consumer: EventConsumer, event: Event) {
    tokio::spawn(async move {
        let result = consumer
            .handler
            .handle_event(consumer.spec, event.payload.clone(), event.context.clone())
            .await;
        match result {
            // Refused by a stopping instance: another one takes it.
            Err(HandlerError::Stopping) => broker.requeue(&consumer.queue, event),
            Err(HandlerError::Failed(error)) => tracing::warn!(
                method = consumer.spec.method,
                source = %event.source,
                event_type = %event.event_type,
                %error,
                "event handler failed"
            ),
            Ok(()) => {}
        }
    });
}

impl Broker {
    /// The instance of `service` that serves the next call, round robin.
    fn pick(&self, service: &str) -> Option<Arc<dyn ServiceHandler>> {
        let routes = self.rpc.load();
        let (_, route) = routes.iter().find(|(name, _)| name == service)?;
        let i = match route.consumers.len() {
            1 => 0,
            n => route.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        Some(route.consumers[i].1.clone())
    }

    /// Puts back an event that a stopping instance refused.
    fn requeue(self: &Arc<Self>, queue: &str, event: Event) {
        let mut events = lock(&self.events);
        let Some(q) = events.queues.get_mut(queue) else {
            tracing::warn!(
                queue,
                "event dropped: its queue was deleted with its last consumer"
            );
            return;
        };
        if q.consumers.is_empty() {
            q.backlog.push_back(event);
        } else {
            let consumer = q.pick();
            drop(events);
            deliver(self.clone(), consumer, event);
        }
    }

    fn add_rpc(&self, service: &str, instance_id: &str, handler: Arc<dyn ServiceHandler>) {
        self.change_route(service, |consumers| {
            consumers.push((instance_id.to_string(), handler));
        });
    }

    fn remove_rpc(&self, service: &str, instance_id: &str) {
        self.change_route(service, |consumers| {
            consumers.retain(|(id, _)| id != instance_id);
        });
    }

    fn change_route(
        &self,
        service: &str,
        change: impl FnOnce(&mut Vec<(String, Arc<dyn ServiceHandler>)>),
    ) {
        let _guard = lock(&self.rpc_changes);
        let mut routes = Vec::clone(&self.rpc.load());
        let mut consumers = match routes.iter().position(|(name, _)| name == service) {
            Some(i) => routes.remove(i).1.consumers.clone(),
            None => Vec::new(),
        };
        change(&mut consumers);
        if !consumers.is_empty() {
            routes.push((
                service.to_string(),
                Arc::new(RpcRoute {
                    consumers,
                    next: AtomicUsize::new(0),
                }),
            ));
        }
        self.rpc.store(Arc::new(routes));
    }

    fn subscribe(self: &Arc<Self>, endpoint: &Endpoint) -> Result<(), TransportError> {
        let mut events = lock(&self.events);
        // Check every declaration before changing anything.
        for spec in endpoint.event_handlers {
            let name = event_queue_name(endpoint.service, spec, &endpoint.instance_id);
            let auto_delete = spec.queue_auto_delete();
            if let Some(q) = events.queues.get(&name) {
                if q.auto_delete != auto_delete {
                    return Err(TransportError::Conflict {
                        queue: name,
                        message: format!(
                            "declared with reliable_delivery = {}, now asked with reliable_delivery = {} by {}.{}",
                            !q.auto_delete, spec.reliable_delivery, endpoint.service, spec.method
                        ),
                    });
                }
            }
        }
        let mut to_deliver = Vec::new();
        for spec in endpoint.event_handlers {
            let name = event_queue_name(endpoint.service, spec, &endpoint.instance_id);
            let queue = events
                .queues
                .entry(name.clone())
                .or_insert_with(|| EventQueue {
                    source: spec.source.to_string(),
                    event_type: spec.event_type.to_string(),
                    auto_delete: spec.queue_auto_delete(),
                    consumers: Vec::new(),
                    next: 0,
                    backlog: VecDeque::new(),
                });
            queue.consumers.push(EventConsumer {
                queue: name.into(),
                instance_id: endpoint.instance_id.clone(),
                spec,
                handler: endpoint.handler.clone(),
            });
            while let Some(event) = queue.backlog.pop_front() {
                to_deliver.push((queue.pick(), event));
            }
        }
        drop(events);
        for (consumer, event) in to_deliver {
            deliver(self.clone(), consumer, event);
        }
        Ok(())
    }

    fn unsubscribe(&self, instance_id: &str) {
        let mut events = lock(&self.events);
        events.queues.retain(|_, q| {
            q.consumers.retain(|c| c.instance_id != instance_id);
            !(q.consumers.is_empty() && q.auto_delete)
        });
    }
}

impl EventQueue {
    fn pick(&mut self) -> EventConsumer {
        let i = self.next % self.consumers.len();
        self.next = self.next.wrapping_add(1);
        self.consumers[i].clone()
    }
}

impl Transport for MemoryTransport {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn call(&self, request: Request) -> BoxFuture<'_, Result<Payload, CallError>> {
        Box::pin(async move {
            let Some(handler) = self.broker.pick(&request.service) else {
                return Err(CallError::UnknownService(request.service.into_owned()));
            };
            handler
                .handle_rpc(&request.method, request.payload, request.context)
                .await
                .map_err(|e| CallError::from_remote(e.into_remote(&request.service)))
        })
    }

    fn call_local<'a>(
        &'a self,
        service: &str,
        method: &'a str,
        call: &'a mut (dyn Any + Send),
        serving: &'a mut Option<Arc<dyn ServiceHandler>>,
        context: &mut Option<WorkerContext>,
    ) -> Option<BoxFuture<'a, Result<(), CallError>>> {
        // An unknown service is declined: `call` reports it.
        let handler = serving.insert(self.broker.pick(service)?);
        handler.handle_local(method, call, context)
    }

    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), TransportError>> {
        let mut deliveries = Vec::new();
        {
            let mut events = lock(&self.broker.events);
            for queue in events.queues.values_mut() {
                if queue.source != event.source || queue.event_type != event.event_type {
                    continue;
                }
                if queue.consumers.is_empty() {
                    queue.backlog.push_back(event.clone());
                } else {
                    deliveries.push(queue.pick());
                }
            }
        }
        // Hand the event itself to the last delivery, clones to the others.
        if let Some(last) = deliveries.pop() {
            for consumer in deliveries {
                deliver(self.broker.clone(), consumer, event.clone());
            }
            deliver(self.broker.clone(), last, event);
        }
        Box::pin(async { Ok(()) })
    }

    fn serve(&self, endpoint: Endpoint) -> BoxFuture<'_, Result<Serving, TransportError>> {
        Box::pin(async move {
            self.broker.subscribe(&endpoint)?;
            if endpoint.has_rpc {
                self.broker.add_rpc(
                    endpoint.service,
                    &endpoint.instance_id,
                    endpoint.handler.clone(),
                );
            }
            let broker = self.broker.clone();
            let service = endpoint.service;
            let instance_id = endpoint.instance_id;
            Ok(Serving::new(move || {
                Box::pin(async move {
                    broker.remove_rpc(service, &instance_id);
                    broker.unsubscribe(&instance_id);
                })
            }))
        })
    }
}
