// Post → updated_model fan-out: CLIENTS Socket.IO clients connect (WebSocket
// transport), then WARMUP + POSTS messages are posted one at a time over
// REST; for each, the time from sending the POST to each client receiving
// its `updated_model` is recorded (one process, one clock). The WARMUP
// posts (default 5) are not counted: the first few deliveries after the
// clients connect wait on this Node.js process warming up (it happens again
// with a fresh Node.js process against a warm server); their worst time is
// printed apart.
// Usage: node fanout.js BASE_URL TOKEN CLIENTS POSTS [WARMUP]
// Prints: connected clients, the warm-up's max, deliveries, missing,
// p50/p99/max in ms.
const { io } = require("socket.io-client");

const [base, token, clientsText, postsText, warmupText] = process.argv.slice(2);
const clients = Number(clientsText);
const posts = Number(postsText);
const warmup = Number(warmupText ?? 5);
const fail = (why) => {
  console.error(`FAIL ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 120000);

(async () => {
  const sockets = [];
  const sentAt = new Map(); // source text -> time the POST was sent
  const latencies = [];
  const warmupLatencies = [];
  let received = 0;
  for (let i = 0; i < clients; i++) {
    const socket = io(base, { reconnection: false, transports: ["websocket"], forceNew: true });
    socket.on("updated_model", (m) => {
      if (m.class !== "Message") return;
      const started = sentAt.get(m.model.source);
      if (started === undefined) return;
      (m.model.source.includes("warm-up") ? warmupLatencies : latencies).push(
        performance.now() - started,
      );
      received += 1;
    });
    sockets.push(
      new Promise((resolve, reject) => {
        socket.on("connect", () => resolve(socket));
        socket.on("connect_error", reject);
      }),
    );
  }
  const connected = await Promise.all(sockets);
  console.log(`connected ${connected.length} clients`);
  for (let n = -warmup; n < posts; n++) {
    const source = n < 0 ? `fan-out ${process.pid} warm-up ${-n}` : `fan-out ${process.pid} ${n}`;
    const target = received + clients;
    sentAt.set(source, performance.now());
    const response = await fetch(`${base}/api/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ source }),
    });
    if (response.status !== 201) fail(`POST answered ${response.status}`);
    // Next post once every client has this one (or 2 s passed).
    const deadline = performance.now() + 2000;
    while (received < target && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  await new Promise((r) => setTimeout(r, 500));
  if (warmup > 0) {
    console.log(
      `warm-up: ${warmup} posts, ${warmupLatencies.length} deliveries, not counted, ` +
        `max ${Math.max(...warmupLatencies).toFixed(2)} ms`,
    );
  }
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  const expected = clients * posts;
  console.log(
    `deliveries ${latencies.length} of ${expected}, missing ${expected - latencies.length}, ` +
      `p50 ${at(0.5).toFixed(2)} ms, p99 ${at(0.99).toFixed(2)} ms, max ${latencies[latencies.length - 1].toFixed(2)} ms`,
  );
  connected.forEach((s) => s.close());
  process.exit(latencies.length === expected ? 0 : 1);
})().catch((e) => fail(e));
