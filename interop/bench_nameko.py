#!/usr/bin/env python
"""Benchmark a service's `echo` through Nameko's standalone ClusterRpcProxy.

  bench_nameko.py [service]        (default: pybench; any service with echo(value))

Env: CALLS (sequential calls, default 2000), CALLS64 (calls with 64 in flight,
default 5000), WARMUP (default 100), AMQP_URI, C64_MODE and C64_PROCS (below).
Prints ONE JSON line.

Sequential: one proxy, one call at a time.

64 in flight: an eventlet GreenPool of 64 green threads. The standalone proxy's
reply consumer is a single socket polled by whoever waits on a result, so two
green threads must never wait on the same proxy at once (eventlet would raise
"Second simultaneous read"). Each proxy therefore gets a lock around
`.result()`: a waiter drains the reply queue, parking other callers' replies
in the proxy's reply dict, and the next waiter finds its reply there.
Publishing (call_async) needs no lock: it takes a pooled confirm-mode
connection. C64_MODE=pool:<P> (default pool:1) spreads the green threads over
P proxies (pool:64: a proxy per green thread); C64_MODE=window runs a
single-thread call_async sliding window on one proxy (no green threads);
C64_MODE=driver has the Nameko service `pydriver` (bench_driver.py, which must
be running) make the calls the way one Nameko service calls another, through
its container's reply consumer, which any number of green threads may wait on.

C64_PROCS=<K> (default 1) splits the 64 in flight over K client processes
(each 64/K in flight and CALLS64/K calls, with C64_MODE's proxies each),
started together once all are set up and warmed up: one Python process uses
one core at most. The rate is all their calls over the time from the first
start to the last end.
"""
import warnings
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402
eventlet.monkey_patch()  # before kombu/nameko create any socket

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402

from eventlet.greenpool import GreenPool  # noqa: E402
from eventlet.semaphore import Semaphore  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

AMQP_URI = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
CONFIG = {"AMQP_URI": AMQP_URI}
PAYLOAD = "hello-{}"  # unique per call, so a mixed-up reply is caught
IN_FLIGHT = int(os.environ.get("IN_FLIGHT", "64"))


def pct(sorted_values, p):
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[idx]


def summary(calls, elapsed, lat):
    lat.sort()
    return calls / elapsed, pct(lat, 50) * 1e6, pct(lat, 99) * 1e6


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
    return summary(calls, elapsed, lat)


class LockedEcho:
    """One proxy shared by several green threads; waits serialised."""

    def __init__(self, proxy, service):
        self.echo = getattr(proxy, service).echo
        self.lock = Semaphore(1)

    def __call__(self, value):
        reply = self.echo.call_async(value)   # publish (+confirm) unlocked
        with self.lock:
            return reply.result()


def bench_c64_pool(service, calls, warmup, n_proxies, ready):
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
        ready()
        start = time.perf_counter()
        for _ in pool.imap(one, range(calls)):
            pass
        elapsed = time.perf_counter() - start
    finally:
        for p in proxies:
            p.stop()
    return summary(calls, elapsed, lat)


def bench_c64_window(service, calls, warmup, ready):
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
        ready()
        start = time.perf_counter()
        lat = run(calls)
        elapsed = time.perf_counter() - start
    return summary(calls, elapsed, lat)


def bench_c64_driver(service, calls, warmup):
    with ClusterRpcProxy(CONFIG, timeout=600) as proxy:
        r = proxy.pydriver.c64(service, calls, warmup, IN_FLIGHT)
    return r["rate"], r["p50_us"], r["p99_us"]


def bench_c64(service, calls, warmup, mode, ready=lambda: None):
    if mode == "driver":
        if os.environ.get("BENCH_ROLE") == "child":
            sys.exit("C64_MODE=driver runs in one process (C64_PROCS=1)")
        return bench_c64_driver(service, calls, warmup)
    if mode == "window":
        return bench_c64_window(service, calls, warmup, ready)
    if mode.startswith("pool"):
        n = int(mode.partition(":")[2] or 1)
        return bench_c64_pool(service, calls, warmup, n, ready)
    sys.exit("unknown C64_MODE %r" % mode)


def child(service, calls, warmup, mode):
    """One of C64_PROCS processes: set up, warm up, say so, run on "go"."""
    started = []

    def ready():
        print("ready", flush=True)
        sys.stdin.readline()
        started.append(time.time())

    _, p50, p99 = bench_c64(service, calls, warmup, mode, ready)
    print(json.dumps({"start": started[0], "end": time.time(), "calls": calls,
                      "p50": p50, "p99": p99}), flush=True)


def bench_c64_procs(service, calls, warmup, mode, procs):
    env = dict(os.environ, BENCH_ROLE="child", IN_FLIGHT=str(IN_FLIGHT // procs),
               CALLS64=str(calls // procs), WARMUP=str(warmup))
    kids = [subprocess.Popen([sys.executable, __file__, service], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             universal_newlines=True) for _ in range(procs)]
    for k in kids:
        line = k.stdout.readline()
        if line.strip() != "ready":
            sys.exit("a client process failed to start: %r" % line)
    for k in kids:
        k.stdin.write("go\n")
        k.stdin.flush()
    results = []
    for k in kids:
        out, _ = k.communicate()
        if k.returncode != 0:
            sys.exit("a client process failed (exit %s)" % k.returncode)
        results.append(json.loads(out.strip().splitlines()[-1]))
    total = sum(r["calls"] for r in results)
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    p50s = sorted(r["p50"] for r in results)
    return total / span, p50s[len(p50s) // 2], max(r["p99"] for r in results)


def main():
    service = sys.argv[1] if len(sys.argv) > 1 else "pybench"
    calls = int(os.environ.get("CALLS", "2000"))
    calls64 = int(os.environ.get("CALLS64", "5000"))
    warmup = int(os.environ.get("WARMUP", "100"))
    mode = os.environ.get("C64_MODE", "pool:1")
    procs = int(os.environ.get("C64_PROCS", "1"))

    if os.environ.get("BENCH_ROLE") == "child":
        return child(service, calls64, warmup, mode)

    seq_rate, seq_p50, seq_p99 = bench_seq(service, calls, warmup)
    if procs > 1:
        c_rate, c_p50, c_p99 = bench_c64_procs(service, calls64, warmup, mode, procs)
    else:
        c_rate, c_p50, c_p99 = bench_c64(service, calls64, warmup, mode)

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
        "c64_procs": procs,
        "c64_p50_us": round(c_p50),
        "c64_p99_us": round(c_p99),
    }), flush=True)


if __name__ == "__main__":
    main()
