#!/usr/bin/env python3
"""The rounds and the report of propagation.sh (which starts the processes).

    propagation.py setup WORK ETCD LEASE GATEWAY_URL HAPROXY_URL
    propagation.py rounds WORK ETCD LEASE ROUNDS WINDOW SETTLE
    propagation.py report WORK WINDOW

WORK holds, per upstream U (a and b): U.port, U.pid and U.log (the arrival
log of upstream.py). `setup` registers both under LEASE (hexadecimal, as
etcdctl prints it), as instances a-0 and b-0, and waits until both fronts
answer 200. `rounds` (with both fronts under load) waits until both fronts
send to both upstreams, then per round deregisters one (they take turns),
waits WINDOW s, registers it again under a new instance id, waits until both
fronts send to it and SETTLE s more; it writes one line per round to
WORK/events:

    round upstream t0 t1 t2 t3

t0/t1: wall clock just before / just after the deletion returned; t2/t3: the
same around the new registration. The registry is written through etcd's
JSON gateway (/v3/kv/...) over one kept-alive connection, so t1 − t0 is the
round trip to etcd (about 1 ms), not the start of a process.

`report` reads the events, the arrival logs and WORK/wrk-<front> and prints
the figures; exit status 1 when a request failed or a round could not be
measured.
"""

import base64
import bisect
import http.client
import json
import math
import os
import re
import socket
import sys
import time
import urllib.request

FRONTS = ("gateway", "haproxy")
UPSTREAMS = ("a", "b")


class Etcd:
    """etcd's v3 JSON gateway on one kept-alive connection."""

    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, path, body):
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            sys.exit(f"etcd {path}: {response.status} {data[:200]!r}")
        return json.loads(data)

    def put(self, key, value, lease):
        self.call("/v3/kv/put", {"key": b64(key), "value": b64(value), "lease": str(lease)})

    def delete(self, key):
        answer = self.call("/v3/kv/deleterange", {"key": b64(key)})
        if answer.get("deleted") != "1":
            sys.exit(f"etcd: deleting {key} deleted {answer.get('deleted')} keys")


def b64(text):
    return base64.b64encode(text.encode()).decode()


def read(path):
    with open(path) as f:
        return f.read().strip()


def last_lines(path, size=100_000):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - size))
        return f.read().decode(errors="replace").splitlines()


def register(etcd, lease_hex, work, u, instance_id):
    """Registers upstream u as instance instance_id of notes."""
    record = {
        "service": "notes",
        "instance_id": instance_id,
        "version": "0.0.0",
        "host": socket.gethostname(),
        "pid": int(read(f"{work}/{u}.pid")),
        "http": f"127.0.0.1:{read(f'{work}/{u}.port')}",
        "routes": [{"method": "GET", "path": "/notes/{id}"}],
        "websocket": False,
        "sticky": False,
        "started_at_ms": int(time.time() * 1000),
    }
    etcd.put(key(instance_id), json.dumps(record), int(lease_hex, 16))


def setup(work, etcd_address, lease_hex, urls):
    etcd = Etcd(etcd_address)
    for u in UPSTREAMS:
        register(etcd, lease_hex, work, u, f"{u}-0")
    deadline = time.time() + 10
    for url in urls:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"{url} does not answer 200 within 10 s of the registrations")
            time.sleep(0.05)


def rounds(work, etcd_address, lease_hex, count, window, settle):
    etcd = Etcd(etcd_address)
    ids = {u: f"{u}-0" for u in UPSTREAMS}

    def register_again(u, instance_id):
        register(etcd, lease_hex, work, u, instance_id)
        ids[u] = instance_id

    def routed(u, since):
        """Waits until both fronts sent u a request that arrived after since."""
        deadline = time.time() + 5
        while time.time() < deadline:
            seen = set()
            for line in last_lines(f"{work}/{u}.log"):
                parts = line.split()
                if len(parts) == 2 and float(parts[0]) > since:
                    seen.add(parts[1])
            if all(f"/notes/{front}" in seen for front in FRONTS):
                return
            time.sleep(0.05)
        sys.exit(f"after 5 s, not both fronts send to upstream {u} (registered as {ids[u]})")

    for u in UPSTREAMS:
        routed(u, 0)
    time.sleep(settle)
    with open(f"{work}/events", "w") as events:
        for r in range(1, count + 1):
            u = UPSTREAMS[(r - 1) % 2]
            t0 = time.time()
            etcd.delete(key(ids[u]))
            t1 = time.time()
            time.sleep(window)
            t2 = time.time()
            register_again(u, f"{u}-{r}")
            t3 = time.time()
            events.write(f"{r} {u} {t0:.6f} {t1:.6f} {t2:.6f} {t3:.6f}\n")
            events.flush()
            routed(u, t2)
            time.sleep(settle)


def key(instance_id):
    return f"/shimeji/v1/instances/notes/{instance_id}"


def pct(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def report(work, window):
    arrivals = {}  # (upstream, path) -> sorted arrival times
    for u in UPSTREAMS:
        for line in open(f"{work}/{u}.log"):
            t, path = line.split()
            arrivals.setdefault((u, path), []).append(float(t))
    for times in arrivals.values():
        times.sort()

    events = [line.split() for line in open(f"{work}/events")]
    next_t0 = {}  # (upstream, round) -> t0 of its next deregistration
    for i, (r, u, *_rest) in enumerate(events):
        for later in events[i + 1:]:
            if later[1] == u:
                next_t0[(u, r)] = float(later[2])
                break

    failed = False
    print()
    print("ms                         p50      p99      max  rounds")
    for front in FRONTS:
        path = f"/notes/{front}"
        dereg, reg, gaps, late, unmeasured = [], [], [], 0, []
        for r, u, t0, t1, t2, t3 in events:
            t0, t1, t2, t3 = map(float, (t0, t1, t2, t3))
            times = arrivals.get((u, path), [])
            # The last arrival before it was registered again.
            i = bisect.bisect_left(times, t2)
            if i == 0 or times[i - 1] < t0 - 0.2:
                unmeasured.append(r)  # the front was not sending to it before t0
                continue
            last = times[i - 1]
            dereg.append((last - t1) * 1000)
            # The sampling: gaps between its requests in the 200 ms before t0.
            k = bisect.bisect_left(times, t0 - 0.2)
            before = times[k:bisect.bisect_left(times, t0)]
            gaps += [(b - a) * 1000 for a, b in zip(before, before[1:])]
            if last > t2 - 0.05:
                late += 1
            # The first arrival after it was registered again.
            j = bisect.bisect_right(times, t2)
            if j < len(times) and times[j] < next_t0.get((u, r), math.inf):
                reg.append((times[j] - t3) * 1000)
        for name, values in (("deregistration", dereg), ("registration", reg)):
            if values:
                print(f"{front:8} {name:14} {pct(values, 50):8.1f} {pct(values, 99):8.1f} "
                      f"{max(values):8.1f}  {len(values)}")
        if dereg:
            verdict = "meets" if pct(dereg, 99) <= 50 else "MISSES"
            print(f"{front:8} deregistration → last request routed: p99 {verdict} the target (≤ 50 ms)")
            print(f"{front:8} per round: {' '.join(f'{v:.1f}' for v in dereg)}")
        if gaps:
            print(f"{front:8} sampling: between two of its requests at one instance before a deregistration, "
                  f"p50 {pct(gaps, 50):.2f} ms, p99 {pct(gaps, 99):.2f} ms")
        if late:
            print(f"{front:8} still routing to a deregistered instance at the end of the "
                  f"{window} s window in {late} round(s)")
            failed = True
        if unmeasured:
            print(f"{front:8} rounds not measured (the front sent nothing to the instance in the "
                  f"200 ms before its deregistration): {unmeasured}")
            failed = True

    dels = [(float(t1) - float(t0)) * 1000 for _, _, t0, t1, _, _ in events]
    print(f"deletion round trip to etcd (t1 − t0): p50 {pct(dels, 50):.1f} ms, max {max(dels):.1f} ms")
    print()
    for front in FRONTS:
        out = open(f"{work}/wrk-{front}").read()
        m = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        sock = re.search(r"Socket errors: (.*)", out)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        print(f"{front:8} wrk: {m.group(1) if m else '?'} requests in {m.group(2) if m else '?'} "
              f"({rps.group(1) if rps else '?'} req/s), non-2xx {non2xx.group(1) if non2xx else 0}, "
              f"socket errors: {sock.group(1) if sock else 'none'}")
        if not m or non2xx or sock:
            failed = True
            print(out, file=sys.stderr)
    return 1 if failed else 0


def main():
    args = sys.argv[1:]
    if len(args) == 6 and args[0] == "setup":
        setup(args[1], args[2], args[3], args[4:])
    elif len(args) == 7 and args[0] == "rounds":
        rounds(args[1], args[2], args[3], int(args[4]), float(args[5]), float(args[6]))
    elif len(args) == 3 and args[0] == "report":
        sys.exit(report(args[1], float(args[2])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
