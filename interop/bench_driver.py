"""A Nameko service that calls another service's `echo` with many calls in
flight, the way a Nameko service calls another: its RPC proxy's replies come
through the container's reply consumer, which any number of green threads
can wait on at once (the standalone ClusterRpcProxy allows one waiter per
proxy). `bench_nameko.py` with C64_MODE=driver asks it to run the calls:

    cd interop && NAMEKO_MAX_WORKERS=100 .venv/bin/nameko run --config bench_config.yaml bench_driver
"""
import time

from eventlet.greenpool import GreenPool
from nameko.rpc import RpcProxy, ServiceProxy, rpc

PAYLOAD = "hello-{}"


class AnyService(RpcProxy):
    """An RPC proxy whose target is chosen per call: `self.proxy_for(name)`."""

    def __init__(self):
        super().__init__("unused")

    def get_dependency(self, worker_ctx):
        def proxy_for(target):
            return ServiceProxy(worker_ctx, target, self.rpc_reply_listener, **self.options)
        return proxy_for


class Driver:
    name = "pydriver"

    proxy_for = AnyService()

    @rpc
    def c64(self, target, calls, warmup, in_flight):
        """Calls `target.echo` `calls` times, `in_flight` at once (after
        `warmup` calls); returns the rate and latency percentiles (µs)."""
        echo = self.proxy_for(target).echo
        pool = GreenPool(in_flight)
        lat = []

        def one(i):
            value = PAYLOAD.format(i)
            t0 = time.perf_counter()
            r = echo(value)
            lat.append(time.perf_counter() - t0)
            assert r == value, (r, value)

        for _ in pool.imap(one, range(warmup)):
            pass
        lat.clear()
        start = time.perf_counter()
        for _ in pool.imap(one, range(calls)):
            pass
        elapsed = time.perf_counter() - start
        lat.sort()
        return {
            "rate": calls / elapsed,
            "p50_us": lat[len(lat) // 2] * 1e6,
            "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
        }
