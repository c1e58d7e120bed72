//! The worker context: who is running, on whose behalf, with which data.
//!
//! Every entrypoint run gets a [`WorkerContext`] with a call id
//! `{service}.{method}.{uuid}`, the `call_id_stack` of the hops that led to
//! it, and context data (`user_id`, `language`, `auth_token`, any other key).
//! While the entrypoint runs the context is the task's *current* context:
//! every client call and dispatched event made from it carries the context on
//! without the method passing anything.
//!
//! ```
//! # async fn demo() {
//! use shimeji::context::{self, WorkerContext};
//!
//! // Outside an entrypoint there is no current context.
//! assert!(context::current().is_none());
//!
//! // Code that starts work from the outside can set data for the whole chain.
//! let root = WorkerContext::root().with_data("user_id", "42");
//! context::scope(root, async {
//!     let here = context::current().unwrap();
//!     assert_eq!(here.data("user_id"), Some(&serde_json::json!("42")));
//! })
//! .await;
//! # }
//! ```
//!
//! Tasks spawned with `tokio::spawn` start without a context; use
//! [`spawn`] to carry the current one into them.

use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use uuid::Uuid;

use crate::trace::{TraceParent, TRACEPARENT};

/// Default number of parent call ids kept in `call_id_stack` (Nameko's
/// `parent_calls_tracked`).
pub const DEFAULT_PARENT_CALLS_TRACKED: usize = 10;

thread_local! {
    /// The context of the worker being polled on this thread: put in place
    /// for each poll of a [`Scoped`] future (or a worker) and taken back
    /// after it, as tokio's task-locals do.
    static CURRENT: RefCell<Option<WorkerContext>> = const { RefCell::new(None) };
}

/// The context of one entrypoint run, or of the outside caller that started a chain.
///
/// Cheap to clone: its parts are shared, and a context with no parent and
/// no data holds no allocation at all.
#[derive(Clone)]
pub struct WorkerContext {
    /// `None` for a root context (a caller outside any service).
    call_id: Option<CallId>,
    parent: Parent,
    /// `None` when there is no context data.
    data: Option<Arc<Map<String, Value>>>,
    parent_calls_tracked: usize,
    /// A worker's own span; for a root or wire context, the caller's span.
    trace: Option<TraceParent>,
    /// A worker's parent span id.
    parent_span: Option<NonZeroU64>,
}

#[derive(Clone)]
enum Parent {
    None,
    /// A caller in this process.
    Local(Arc<WorkerContext>),
    /// A caller known only by the stack it sent (a wire transport).
    Stack(Arc<[String]>),
}

#[derive(Clone)]
pub(crate) struct CallId {
    service: &'static str,
    entrypoint: &'static str,
    id: Uuid,
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.service, self.entrypoint, self.id)
    }
}

/// One entry of a call id stack, borrowed (see
/// [`WorkerContext::stack_entry`]); its `Display` is the call id.
pub(crate) enum StackEntry<'a> {
    /// A worker's call id in this process.
    Own(&'a CallId),
    /// A call id a wire caller sent.
    Sent(&'a str),
}

impl fmt::Display for StackEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackEntry::Own(id) => id.fmt(f),
            StackEntry::Sent(id) => f.write_str(id),
        }
    }
}

/// A random (version 4) UUID from the thread's fast generator: ids that
/// must be unique, not secret (call ids, correlation ids, request ids).
/// `Uuid::new_v4` would ask the kernel for randomness on every call.
pub(crate) fn new_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid()
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl WorkerContext {
    /// An empty root context: no call id, no data. Add data with
    /// [`with_data`](Self::with_data) and run code in it with [`scope`].
    pub fn root() -> Self {
        WorkerContext {
            call_id: None,
            parent: Parent::None,
            data: None,
            parent_calls_tracked: DEFAULT_PARENT_CALLS_TRACKED,
            trace: None,
            parent_span: None,
        }
    }

    /// The context of a caller that arrived over the wire: the call id stack
    /// and context data it sent (keys without the `nameko.` prefix). A
    /// `traceparent` key is the caller's [trace context](crate::trace), not data.
    pub fn from_wire(call_id_stack: Vec<String>, mut data: Map<String, Value>) -> Self {
        let trace = data
            .remove(TRACEPARENT)
            .and_then(|v| v.as_str().and_then(TraceParent::parse));
        WorkerContext {
            call_id: None,
            parent: if call_id_stack.is_empty() {
                Parent::None
            } else {
                Parent::Stack(call_id_stack.into())
            },
            data: (!data.is_empty()).then(|| Arc::new(data)),
            parent_calls_tracked: DEFAULT_PARENT_CALLS_TRACKED,
            trace,
            parent_span: None,
        }
    }

    /// A copy of this root context that continues the trace of `parent`
    /// (a caller's `traceparent`), e.g. at an HTTP edge.
    pub fn with_trace_parent(mut self, parent: TraceParent) -> Self {
        self.trace = Some(parent);
        self
    }

    /// The context of a new worker of `service.entrypoint` called from `parent`.
    pub fn for_worker(
        service: &'static str,
        entrypoint: &'static str,
        parent: Option<WorkerContext>,
        parent_calls_tracked: usize,
    ) -> Self {
        let (parent, data, caller_span) = match parent {
            None => (Parent::None, None, None),
            // A root context is no hop of its own: take over what it carries.
            Some(p) if p.call_id.is_none() => (p.parent, p.data, p.trace),
            Some(p) => {
                let data = p.data.clone();
                let span = p.trace;
                (Parent::Local(Arc::new(p)), data, span)
            }
        };
        let trace = Some(caller_span.map_or_else(TraceParent::new_root, |c| c.child()));
        WorkerContext {
            call_id: Some(CallId {
                service,
                entrypoint,
                id: new_uuid(),
            }),
            parent,
            data,
            parent_calls_tracked,
            trace,
            parent_span: caller_span.and_then(|c| NonZeroU64::new(c.span_id())),
        }
    }

    /// A copy of this context with one more data key (e.g. `user_id`).
    pub fn with_data(&self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let mut data = self.data.as_deref().cloned().unwrap_or_default();
        data.insert(key.into(), value.into());
        WorkerContext {
            data: Some(Arc::new(data)),
            ..self.clone()
        }
    }

    /// This worker's call id, `{service}.{entrypoint}.{uuid}`; `None` for a root context.
    pub fn call_id(&self) -> Option<String> {
        self.call_id.as_ref().map(ToString::to_string)
    }

    /// The service running this worker.
    pub fn service(&self) -> Option<&'static str> {
        self.call_id.as_ref().map(|c| c.service)
    }

    /// The entrypoint running this worker.
    pub fn entrypoint(&self) -> Option<&'static str> {
        self.call_id.as_ref().map(|c| c.entrypoint)
    }

    /// The trace context calls and events made from here carry on: a
    /// worker's own span, or for a root context the caller's.
    pub fn trace_parent(&self) -> Option<TraceParent> {
        self.trace
    }

    /// The trace id as 32 hex digits; every worker of a request shares it.
    pub fn trace_id(&self) -> Option<String> {
        self.trace.map(|t| t.trace_id_hex())
    }

    /// This worker's span id as 16 hex digits.
    pub fn span_id(&self) -> Option<String> {
        self.call_id.as_ref()?;
        self.trace.map(|t| t.span_id_hex())
    }

    /// The span id of the worker (or remote caller) that called this one.
    pub fn parent_span_id(&self) -> Option<String> {
        self.parent_span.map(|id| format!("{:016x}", id.get()))
    }

    pub(crate) fn parent_span(&self) -> Option<u64> {
        self.parent_span.map(NonZeroU64::get)
    }

    /// The call id of the worker that called this one, if any.
    pub fn parent_call_id(&self) -> Option<String> {
        let own = usize::from(self.call_id.is_some());
        let index = self.stack_len().checked_sub(own + 1)?;
        self.stack_entry(index).map(|id| id.to_string())
    }

    /// The call ids of the hops that led here, oldest first, this worker's
    /// own call id last. At most `parent_calls_tracked` parents are kept.
    pub fn call_id_stack(&self) -> Vec<String> {
        let mut stack = match &self.parent {
            Parent::None => Vec::new(),
            Parent::Local(p) => p.call_id_stack(),
            Parent::Stack(s) => s.to_vec(),
        };
        if let Some(id) = &self.call_id {
            let keep = self.parent_calls_tracked;
            if stack.len() > keep {
                stack.drain(..stack.len() - keep);
            }
            stack.push(id.to_string());
        }
        stack
    }

    /// How many call ids [`call_id_stack`](Self::call_id_stack) holds,
    /// counted without building it.
    pub(crate) fn stack_len(&self) -> usize {
        let parent = self.parent_stack_len();
        match self.call_id {
            Some(_) => parent.min(self.parent_calls_tracked) + 1,
            None => parent,
        }
    }

    /// The length of the parent's call id stack, uncapped.
    fn parent_stack_len(&self) -> usize {
        match &self.parent {
            Parent::None => 0,
            Parent::Local(p) => p.stack_len(),
            Parent::Stack(s) => s.len(),
        }
    }

    /// Entry `index` of [`call_id_stack`](Self::call_id_stack), borrowed:
    /// what a log line needs of the stack, without a `Vec` and a `String`
    /// per call id.
    pub(crate) fn stack_entry(&self, index: usize) -> Option<StackEntry<'_>> {
        let parent_len = self.parent_stack_len();
        // The parent's entries this stack keeps: its last
        // `parent_calls_tracked` when this is a worker, all otherwise.
        let (skip, kept) = match self.call_id {
            Some(_) => {
                let kept = parent_len.min(self.parent_calls_tracked);
                (parent_len - kept, kept)
            }
            None => (0, parent_len),
        };
        if index < kept {
            match &self.parent {
                Parent::None => None,
                Parent::Local(p) => p.stack_entry(skip + index),
                Parent::Stack(s) => s.get(skip + index).map(|id| StackEntry::Sent(id)),
            }
        } else if index == kept {
            self.call_id.as_ref().map(StackEntry::Own)
        } else {
            None
        }
    }

    /// One context data value (`user_id`, `language`, `auth_token`, …).
    pub fn data(&self, key: &str) -> Option<&Value> {
        self.data_map().get(key)
    }

    /// All context data.
    pub fn data_map(&self) -> &Map<String, Value> {
        self.data.as_deref().unwrap_or(&EMPTY)
    }

    /// The `user_id` context value, when it is a string.
    pub fn user_id(&self) -> Option<&str> {
        self.data("user_id").and_then(Value::as_str)
    }

    /// The `language` context value, when it is a string.
    pub fn language(&self) -> Option<&str> {
        self.data("language").and_then(Value::as_str)
    }

    /// The `auth_token` context value, when it is a string.
    pub fn auth_token(&self) -> Option<&str> {
        self.data("auth_token").and_then(Value::as_str)
    }
}

impl fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Context data may hold secrets (auth tokens): show keys only.
        f.debug_struct("WorkerContext")
            .field("call_id", &self.call_id())
            .field("call_id_stack", &self.call_id_stack())
            .field("trace", &self.trace)
            .field("data_keys", &self.data_map().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The context of the entrypoint running on this task, if any.
pub fn current() -> Option<WorkerContext> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// Runs `f` on the current context, borrowed rather than cloned (for a log
/// line); `None` when there is none. `f` must not enter another context.
#[cfg_attr(not(feature = "cli"), allow(dead_code))] // the log formats need feature `cli`
pub(crate) fn with_current<R>(f: impl FnOnce(&WorkerContext) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| {
            c.try_borrow()
                .ok()
                .and_then(|current| current.as_ref().map(f))
        })
        .ok()
        .flatten()
}

/// Runs `f` with the context in `slot` as the current one, and puts it
/// back in `slot` afterwards, even if `f` panics. A context that was
/// current before is current again after.
pub(crate) fn enter<R>(slot: &mut Option<WorkerContext>, f: impl FnOnce() -> R) -> R {
    struct Restore<'a>(&'a mut Option<WorkerContext>);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = CURRENT.try_with(|c| std::mem::swap(self.0, &mut *c.borrow_mut()));
        }
    }
    if CURRENT
        .try_with(|c| std::mem::swap(slot, &mut *c.borrow_mut()))
        .is_err()
    {
        // The thread is shutting down: run without a current context.
        return f();
    }
    let _restore = Restore(slot);
    f()
}

pin_project_lite::pin_project! {
    /// A future that runs with a worker context as its current one: see
    /// [`scope`].
    pub struct Scoped<F> {
        context: Option<WorkerContext>,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let future = this.future;
        enter(this.context, || future.poll(cx))
    }
}

/// Runs `future` with `context` as its current context.
pub fn scope<F: Future>(context: WorkerContext, future: F) -> Scoped<F> {
    Scoped {
        context: Some(context),
        future,
    }
}

/// Spawns a task that keeps the current worker context, so calls and events
/// made from it carry the call id stack and context data on.
///
/// ```
/// # async fn demo() {
/// let handle = shimeji::spawn(async {
///     // client calls made here carry the spawning worker's context
///     shimeji::context::current().is_some()
/// });
/// # let _ = handle.await;
/// # }
/// ```
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current() {
        Some(ctx) => tokio::spawn(scope(ctx, future)),
        None => tokio::spawn(future),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_has_service_method_uuid() {
        let ctx = WorkerContext::for_worker("greeter", "hello", None, 10);
        let id = ctx.call_id().unwrap();
        let parts: Vec<_> = id.splitn(3, '.').collect();
        assert_eq!(parts[0], "greeter");
        assert_eq!(parts[1], "hello");
        assert!(Uuid::parse_str(parts[2]).is_ok(), "{id}");
        assert_eq!(ctx.call_id_stack(), vec![id]);
    }

    /// The stack read in place, entry by entry, as `call_id_stack` builds it.
    fn entries(ctx: &WorkerContext) -> Vec<String> {
        (0..ctx.stack_len())
            .map(|i| {
                ctx.stack_entry(i)
                    .expect("an entry below stack_len")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn stack_entries_read_in_place_match_the_stack() {
        for cap in [0, 1, 3, 10] {
            let wire: Vec<String> = (0..5).map(|i| format!("edge.call.{i}")).collect();
            let roots = [
                WorkerContext::root(),
                WorkerContext::from_wire(wire.clone(), Map::new()),
                WorkerContext::from_wire(vec![], Map::new()),
            ];
            for root in roots {
                let mut ctx = root.clone();
                assert_eq!(entries(&ctx), ctx.call_id_stack());
                for depth in 0..6 {
                    ctx = WorkerContext::for_worker("a", "go", Some(ctx), cap);
                    let stack = ctx.call_id_stack();
                    assert_eq!(entries(&ctx), stack, "cap {cap}, depth {depth}");
                    assert!(ctx.stack_entry(stack.len()).is_none());
                    let parent = stack.len().checked_sub(2).map(|i| stack[i].clone());
                    assert_eq!(ctx.parent_call_id(), parent, "cap {cap}, depth {depth}");
                }
            }
        }
    }

    #[test]
    fn stack_is_capped_at_parent_calls_tracked() {
        let mut ctx = WorkerContext::for_worker("a", "go", None, 3);
        for _ in 0..10 {
            ctx = WorkerContext::for_worker("a", "go", Some(ctx), 3);
        }
        let stack = ctx.call_id_stack();
        assert_eq!(stack.len(), 4);
        assert_eq!(stack.last(), ctx.call_id().as_ref());
    }

    #[test]
    fn wire_stack_and_data_carry_over() {
        let mut data = Map::new();
        data.insert("user_id".into(), "u1".into());
        let caller = WorkerContext::from_wire(vec!["x.y.1".into()], data);
        let ctx = WorkerContext::for_worker("b", "m", Some(caller), 10);
        let stack = ctx.call_id_stack();
        assert_eq!(stack[0], "x.y.1");
        assert_eq!(stack.len(), 2);
        assert_eq!(ctx.parent_call_id().as_deref(), Some("x.y.1"));
        assert_eq!(ctx.user_id(), Some("u1"));
    }

    #[test]
    fn workers_continue_their_callers_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut data = Map::new();
        data.insert(TRACEPARENT.into(), header.into());
        let caller = WorkerContext::from_wire(vec![], data);
        assert!(
            caller.data_map().is_empty(),
            "traceparent is not context data"
        );
        let b = WorkerContext::for_worker("b", "m", Some(caller), 10);
        assert_eq!(
            b.trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(b.parent_span_id().as_deref(), Some("00f067aa0ba902b7"));
        let c = WorkerContext::for_worker("c", "m", Some(b.clone()), 10);
        assert_eq!(c.trace_id(), b.trace_id());
        assert_eq!(c.parent_span_id(), b.span_id());
        assert_ne!(c.span_id(), b.span_id());
    }

    #[test]
    fn a_worker_without_a_caller_starts_a_trace() {
        let a = WorkerContext::for_worker("a", "m", None, 10);
        assert_eq!(a.trace_id().map(|t| t.len()), Some(32));
        assert_eq!(a.parent_span_id(), None);
        let garbage = WorkerContext::from_wire(vec![], {
            let mut m = Map::new();
            m.insert(TRACEPARENT.into(), "not a traceparent".into());
            m
        });
        let b = WorkerContext::for_worker("b", "m", Some(garbage), 10);
        assert_eq!(b.parent_span_id(), None);
    }
}
