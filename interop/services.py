"""Nameko 2.14.1 services for the shimeji interop suite.

Run all of them in one process:
    cd interop && .venv/bin/nameko run --config config.yaml services
"""
from collections import defaultdict

from nameko.contextdata import Language, UserId
from nameko.events import (
    BROADCAST, SERVICE_POOL, SINGLETON, EventDispatcher, event_handler,
)
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc


class Oops(Exception):
    """Custom remote error: on the wire exc_type "Oops", exc_path "services.Oops"."""


class WorkerCtx(DependencyProvider):
    """Injects the current WorkerContext itself."""

    def get_dependency(self, worker_ctx):
        return worker_ctx


def ctx_summary(worker_ctx, user_id, language):
    return {
        "call_id_stack": worker_ctx.call_id_stack,
        "user_id": user_id,
        "language": language,
    }


class PyEcho:
    name = "pyecho"

    worker_ctx = WorkerCtx()
    user_id = UserId()
    language = Language()

    @rpc
    def echo(self, value):
        return value

    @rpc
    def add(self, a, b):
        return a + b

    @rpc
    def fail(self):
        raise Oops("it broke", 42)

    @rpc
    def whoami(self):
        return ctx_summary(self.worker_ctx, self.user_id, self.language)

    @rpc
    def context(self):
        """Extra: the full context data (every inbound header, `nameko.` stripped)."""
        return self.worker_ctx.context_data


class PyRelay:
    name = "pyrelay"

    worker_ctx = WorkerCtx()
    rustecho = RpcProxy("rustecho")

    @rpc
    def relay_to_rust(self, value=None):
        # `value` is accepted for symmetry with tests; rustecho.whoami takes no args
        return {
            "mine": self.worker_ctx.call_id_stack,
            "rust": self.rustecho.whoami(),
        }

    @rpc
    def stack(self):
        return self.worker_ctx.call_id_stack


# Handler records live at module level: every worker gets a fresh service instance.
RECEIVED = defaultdict(list)   # handler type -> [payload, ...]
RECEIVED_META = defaultdict(list)  # handler type -> [{"payload", "call_id_stack", "context"}]


class PyEvents:
    name = "pyevents"

    dispatcher = EventDispatcher()
    worker_ctx = WorkerCtx()

    @rpc
    def dispatch(self, event_type, payload):
        self.dispatcher(event_type, payload)
        return self.worker_ctx.call_id_stack

    def _record(self, kind, payload):
        RECEIVED[kind].append(payload)
        RECEIVED_META[kind].append({
            "payload": payload,
            "call_id_stack": self.worker_ctx.call_id_stack,
            "context": self.worker_ctx.data,
        })

    @event_handler("rustevents", "ping", handler_type=SERVICE_POOL)
    def on_ping_pool(self, payload):
        self._record("service_pool", payload)

    @event_handler("rustevents", "ping", handler_type=SINGLETON)
    def on_ping_singleton(self, payload):
        self._record("singleton", payload)

    # BROADCAST with the default (uuid4-per-instance) identifier requires
    # reliable_delivery=False (nameko raises EventHandlerConfigurationError otherwise)
    @event_handler("rustevents", "ping", handler_type=BROADCAST,
                   reliable_delivery=False)
    def on_ping_broadcast(self, payload):
        self._record("broadcast", payload)

    @rpc
    def received(self):
        return {kind: list(RECEIVED[kind])
                for kind in ("service_pool", "singleton", "broadcast")}

    @rpc
    def received_meta(self):
        """Extra: per handler type, the payload plus the handler worker's
        call_id_stack and context data (the event's headers)."""
        return {kind: list(RECEIVED_META[kind])
                for kind in ("service_pool", "singleton", "broadcast")}

    @rpc
    def reset(self):
        """Extra: clear the records (tests call it before dispatching)."""
        RECEIVED.clear()
        RECEIVED_META.clear()
        return True


class PyBench:
    name = "pybench"

    @rpc
    def echo(self, value):
        return value
