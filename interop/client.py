#!/usr/bin/env python
"""Tiny Nameko CLI client for the interop tests.

  client.py call <service> <method> ['<json args>'] ['<json kwargs>'] [--context '{"user_id": "u1"}'] [--timeout S]
      prints the result as JSON; on a remote error prints
      {"error": {"exc_type": ..., "value": ...}} and exits 3 (RpcTimeout: exits 4)
  client.py dispatch <source> <event_type> '<json payload>' [--context '{...}']
      dispatches an event with nameko's standalone event_dispatcher; prints {"dispatched": true}

AMQP URI from env AMQP_URI (default amqp://guest:guest@127.0.0.1:5672/).
"""
import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from nameko.exceptions import (  # noqa: E402
    IncorrectSignature, MalformedRequest, MethodNotFound, RemoteError,
    RpcTimeout, UnknownService,
)
from nameko.standalone.events import event_dispatcher  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

AMQP_URI = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cmd_call(opts):
    args = json.loads(opts.args)
    kwargs = json.loads(opts.kwargs)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        sys.exit("args must be a JSON array and kwargs a JSON object")
    context = json.loads(opts.context) if opts.context else None
    config = {"AMQP_URI": AMQP_URI}
    try:
        with ClusterRpcProxy(config, context_data=context,
                             timeout=opts.timeout) as proxy:
            method = getattr(getattr(proxy, opts.service), opts.method)
            result = method(*args, **kwargs)
    except RemoteError as exc:
        emit({"error": {"exc_type": exc.exc_type, "value": exc.value}})
        return 3
    except (MethodNotFound, IncorrectSignature, MalformedRequest,
            UnknownService) as exc:
        # nameko re-instantiates these from the reply (UnknownService is
        # raised locally on basic.return NO_ROUTE); report them the same way
        emit({"error": {"exc_type": type(exc).__name__, "value": str(exc)}})
        return 3
    except RpcTimeout as exc:
        emit({"error": {"exc_type": "RpcTimeout", "value": str(exc)}})
        return 4
    emit(result)
    return 0


def cmd_dispatch(opts):
    payload = json.loads(opts.payload)
    context = json.loads(opts.context) if opts.context else {}
    headers = {"nameko." + k: v for k, v in context.items() if v is not None}
    dispatch = event_dispatcher({"AMQP_URI": AMQP_URI}, headers=headers)
    dispatch(opts.source, opts.event_type, payload)
    emit({"dispatched": True})
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("call", help="RPC call through a ClusterRpcProxy")
    p.add_argument("service")
    p.add_argument("method")
    p.add_argument("args", nargs="?", default="[]", help="JSON array")
    p.add_argument("kwargs", nargs="?", default="{}", help="JSON object")
    p.add_argument("--context", help="JSON object of context data")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="RPC timeout in seconds (default 30)")
    p.set_defaults(func=cmd_call)

    d = sub.add_parser("dispatch", help="dispatch an event")
    d.add_argument("source")
    d.add_argument("event_type")
    d.add_argument("payload", help="JSON payload")
    d.add_argument("--context", help="JSON object sent as nameko.<key> headers")
    d.set_defaults(func=cmd_dispatch)

    opts = parser.parse_args(argv)
    return opts.func(opts)


if __name__ == "__main__":
    sys.exit(main())
