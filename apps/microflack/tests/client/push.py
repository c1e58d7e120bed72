"""A stock python-socketio 5 client against the push service.

Usage: python push.py BASE_URL TOKEN USER_ID
Prints one line per step; exits 0 when every step passed.
"""

import sys
import threading

import socketio

base, token, user_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
TIMEOUT = 10


def fail(why):
    print(f"FAIL {why}", flush=True)
    sys.exit(1)


class Waiter:
    """Collects one client's events; waits for one that matches."""

    def __init__(self, client):
        self.events = []
        self.cond = threading.Condition()
        client.on("updated_model", lambda data: self.add("updated_model", data))
        client.on("expired_token", lambda data=None: self.add("expired_token", data))

    def add(self, name, data):
        with self.cond:
            self.events.append((name, data))
            self.cond.notify_all()

    def wait(self, what, predicate):
        with self.cond:
            ok = self.cond.wait_for(
                lambda: any(n == what and predicate(d) for n, d in self.events), TIMEOUT
            )
        if not ok:
            fail(f"no {what} came")


a = socketio.Client(reconnection=False)
b = socketio.Client(reconnection=False)
wa, wb = Waiter(a), Waiter(b)
a.connect(base, transports=["polling", "websocket"], wait_timeout=TIMEOUT)
b.connect(base, transports=["websocket"], wait_timeout=TIMEOUT)
print("connected", a.transport(), b.transport(), flush=True)

a.emit("ping_user", "not-a-token")
wa.wait("expired_token", lambda d: d is None)
if any(n == "expired_token" for n, _ in wb.events):
    fail("expired_token reached another socket")
print("expired_token to the offending socket only", flush=True)

a.emit("ping_user", token)
wb.wait("updated_model", lambda m: m["class"] == "User" and m["model"]["id"] == user_id and m["model"]["online"])
print("ping_user: User online pushed", flush=True)

a.emit("post_message", ({"source": "from *python*"}, token))
for w in (wa, wb):
    w.wait("updated_model", lambda m: m["class"] == "Message" and m["model"]["html"] == "from <em>python</em>")
print("post_message: Message pushed to every client", flush=True)

a.disconnect()
wb.wait("updated_model", lambda m: m["class"] == "User" and m["model"]["id"] == user_id and not m["model"]["online"])
print("disconnect: User offline pushed", flush=True)
b.disconnect()
print("PASS", flush=True)
