#!/usr/bin/env python
"""Benchmark a service's `echo` through Nameko's standalone ClusterRpcProxy.

  bench_nameko.py [service]        (default: pybench; any service with echo(value))

Env: CALLS (sequential calls, default 2000), CALLS64 (calls with 64 in flight,
default 5000), WARMUP (default 100), AMQP_URI, C64_MODE (see below).
Prints ONE JSON line.

64 in flight: an eventlet GreenPool of 64 green threads. The standalone proxy's
reply consumer is a single socket polled by whoever waits on a result, so two
green threads must never wait on the same proxy at once (eventlet would raise
"Second simultaneous read"). Each proxy therefore gets a lock around
`.result()`: a waiter drains the reply queue, parking other callers' replies
in the proxy's reply dict, and the next waiter finds its reply there.
Publishing (call_async) needs no lock: it takes a pooled confirm-mode
connection. C64_MODE=pool:<P> (default pool:1) spreads the 64 green threads
over P proxies; C64_MODE=window runs a single-thread call_async sliding window
of 64 on one proxy (no green threads).
"""
import warnings
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402
eventlet.monkey_patch()  # before kombu/nameko create any socket

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402

from eventlet.greenpool import GreenPool  # noqa: E402
from eventlet.semaphore import Semaphore  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

AMQP_URI = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
CONFIG = {"AMQP_URI": AMQP_URI}
PAYLOAD = "hello-{}"  # unique per call, so a mixed-up reply is caught
IN_FLIGHT = 64


def pct(sorted_values, p):
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[idx]


def bench_seq(service, calls, warmup):
    with ClusterRpcProxy(CONFIG) as proxy:
        echo = getattr(proxy, service).echo
        for i in range(warmup):
            assert echo(PAYLOAD.format(i)) == PAYLOAD.format(i)
        lat = []
        start = time.perf_counter()
        for i in range(calls):
            value = PAYLOAD.format(i)
            t0 = time.perf_counter()
            r = echo(value)
            lat.append(time.perf_counter() - t0)
            assert r == value, (r, value)
        elapsed = time.perf_counter() - start
    lat.sort()
    return calls / elapsed, pct(lat, 50) * 1e6, pct(lat, 99) * 1e6


class LockedEcho:
    """One proxy shared by several green threads; waits serialised."""

    def __init__(self, proxy, service):
        self.echo = getattr(proxy, service).echo
        self.lock = Semaphore(1)

    def __call__(self, value):
        reply = self.echo.call_async(value)   # publish (+confirm) unlocked
        with self.lock:
            return reply.result()


def bench_c64_pool(service, calls, warmup, n_proxies):
    proxies = [ClusterRpcProxy(CONFIG) for _ in range(n_proxies)]
    try:
        callers = [LockedEcho(p.start(), service) for p in proxies]
        pool = GreenPool(IN_FLIGHT)
        lat = []

        def one(i):
            value = PAYLOAD.format(i)
            t0 = time.perf_counter()
            r = callers[i % n_proxies](value)
            lat.append(time.perf_counter() - t0)
            assert r == value, (r, value)

        for _ in pool.imap(one, range(warmup)):
            pass
        lat.clear()
        start = time.perf_counter()
        for _ in pool.imap(one, range(calls)):
            pass
        elapsed = time.perf_counter() - start
    finally:
        for p in proxies:
            p.stop()
    lat.sort()
    return calls / elapsed, pct(lat, 50) * 1e6, pct(lat, 99) * 1e6


def bench_c64_window(service, calls, warmup):
    with ClusterRpcProxy(CONFIG) as proxy:
        echo = getattr(proxy, service).echo

        def run(n):
            lat = []
            window = deque()
            issued = 0
            while issued < n or window:
                while issued < n and len(window) < IN_FLIGHT:
                    value = PAYLOAD.format(issued)
                    window.append((value, time.perf_counter(),
                                   echo.call_async(value)))
                    issued += 1
                value, t0, reply = window.popleft()
                r = reply.result()
                assert r == value, (r, value)
                lat.append(time.perf_counter() - t0)
            return lat

        run(warmup)
        start = time.perf_counter()
        lat = run(calls)
        elapsed = time.perf_counter() - start
    lat.sort()
    return calls / elapsed, pct(lat, 50) * 1e6, pct(lat, 99) * 1e6


def main():
    service = sys.argv[1] if len(sys.argv) > 1 else "pybench"
    calls = int(os.environ.get("CALLS", "2000"))
    calls64 = int(os.environ.get("CALLS64", "5000"))
    warmup = int(os.environ.get("WARMUP", "100"))
    mode = os.environ.get("C64_MODE", "pool:1")

    seq_rate, seq_p50, seq_p99 = bench_seq(service, calls, warmup)
    if mode == "window":
        c_rate, c_p50, c_p99 = bench_c64_window(service, calls64, warmup)
    elif mode.startswith("pool"):
        n = int(mode.partition(":")[2] or 1)
        c_rate, c_p50, c_p99 = bench_c64_pool(service, calls64, warmup, n)
    else:
        sys.exit("unknown C64_MODE %r" % mode)

    print(json.dumps({
        "client": "nameko",
        "service": service,
        "seq_calls_per_sec": round(seq_rate, 1),
        "seq_p50_us": round(seq_p50),
        "seq_p99_us": round(seq_p99),
        "c64_calls_per_sec": round(c_rate, 1),
        "seq_calls": calls,
        "c64_calls": calls64,
        "c64_mode": mode,
        "c64_p50_us": round(c_p50),
        "c64_p99_us": round(c_p99),
    }), flush=True)


if __name__ == "__main__":
    main()
