// A load on MicroFlack through its gateway, that checks nothing is lost:
//
//   CLIENTS Socket.IO clients, each its own user: connect (long polling,
//   then WebSocket, as a browser does), ping_user on every connect and every
//   10 s, post a message every INTERVAL ms (post_message with an
//   acknowledgement, sent again with the same client_key when none comes),
//   and after a reconnect catch up over REST
//   (updated_since = the last update seen, inclusive).
//   READERS REST clients: GET /api/messages?updated_since, GET /api/users,
//   and now and then POST /api/tokens and POST /api/messages.
//
// It runs until STOP_FILE exists (or SIGTERM), waits for the last pushes,
// then compares what each client received with what was stored, and writes
// a JSON summary to SUMMARY_FILE (and stdout). Exit status 0 when nothing
// failed: no failed HTTP request (Socket.IO handshakes and polls included),
// no post lost, every client received every message, no user went offline.
//
//   node load.js URL STOP_FILE SUMMARY_FILE
//   env: LOAD_CLIENTS (20), LOAD_READERS (4), LOAD_INTERVAL_MS (500),
//        LOAD_READY_FILE (created once every client is connected and online)
//
// Needs socket.io-client from apps/microflack/tests/client
// (bash apps/microflack/tests/client/install.sh).
"use strict";
const fs = require("fs");
const path = require("path");

let io;
try {
  ({ io } = require(path.join(__dirname, "../tests/client/node_modules/socket.io-client")));
} catch (e) {
  console.error("socket.io-client is not installed: bash apps/microflack/tests/client/install.sh");
  process.exit(2);
}

const [base, stopFile, summaryFile] = process.argv.slice(2);
if (!base || !stopFile || !summaryFile) {
  console.error("usage: node load.js URL STOP_FILE SUMMARY_FILE");
  process.exit(2);
}
const CLIENTS = Number(process.env.LOAD_CLIENTS || 20);
const READERS = Number(process.env.LOAD_READERS || 4);
const INTERVAL = Number(process.env.LOAD_INTERVAL_MS || 500);
const readyFile = process.env.LOAD_READY_FILE;
const run = Math.random().toString(36).slice(2, 8);
const marker = `load-${run}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const stats = {
  http: { requests: 0, failed: 0, failures: [] },
  posts: { socket_acked: 0, socket_resent: 0, socket_refused: 0, socket_unacked: 0, rest_created: 0 },
  sockets: { connects: 0, reconnects: 0, connect_errors: 0, disconnects: {}, catchups: 0 },
  offline_flips: [],
};
let stopping = false;
let measuring = false;

// A user shown offline during the run, once per user and observer.
const flips = new Set();
function flipped(user, seenBy) {
  const key = `${user} seen by ${seenBy}`;
  if (!flips.has(key)) {
    flips.add(key);
    stats.offline_flips.push({ user, seen_by: seenBy, at: new Date().toISOString() });
  }
}

function failure(what) {
  stats.http.failed += 1;
  if (stats.http.failures.length < 20) stats.http.failures.push(what);
}

// One HTTP request through the gateway; any network error or status other
// than the expected ones counts as failed.
async function request(method, url, { body, headers = {}, ok = [200, 201] } = {}) {
  stats.http.requests += 1;
  let response;
  try {
    response = await fetch(base + url, {
      method,
      headers: body ? { "Content-Type": "application/json", ...headers } : headers,
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(10000),
    });
  } catch (e) {
    failure(`${method} ${url}: ${e.cause?.code || e.name}`);
    return null;
  }
  const text = await response.text();
  if (!ok.includes(response.status)) {
    failure(`${method} ${url}: ${response.status} ${text.slice(0, 120)}`);
    return null;
  }
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    failure(`${method} ${url}: not JSON`);
    return null;
  }
}

const basic = (nickname, password) =>
  "Basic " + Buffer.from(`${nickname}:${password}`).toString("base64");

async function signUp(nickname, password) {
  const created = await request("POST", "/api/users", { body: { nickname, password } });
  const token = await request("POST", "/api/tokens", { headers: { Authorization: basic(nickname, password) } });
  if (!created || !token) throw new Error(`cannot sign up ${nickname}: ${JSON.stringify(stats.http.failures)}`);
  return { id: created.id, token: token.token };
}

const ours = (message) => typeof message.source === "string" && message.source.startsWith(marker);

class Client {
  constructor(n, user) {
    this.n = n;
    this.nickname = `${marker}-c${n}`;
    this.user = user;
    this.received = new Set();
    this.lastSeen = { Message: 0, User: 0 };
    this.online = false;
    this.everConnected = false;
    this.sent = 0;
  }

  see(cls, model) {
    if (model.updated_at > this.lastSeen[cls]) this.lastSeen[cls] = model.updated_at;
    if (cls === "Message" && ours(model)) this.received.add(model.id);
    // Only the Socket.IO clients' users ping; the readers' may go offline.
    if (cls === "User" && model.nickname.startsWith(`${marker}-c`)) {
      if (model.id === this.user.id && model.online) this.online = true;
      if (measuring && !stopping && !model.online) flipped(model.nickname, this.nickname);
    }
  }

  async catchUp() {
    stats.sockets.catchups += 1;
    const messages = await request("GET", `/api/messages?updated_since=${this.lastSeen.Message}`);
    const users = await request("GET", `/api/users?updated_since=${this.lastSeen.User}`);
    for (const m of messages?.messages || []) this.see("Message", m);
    for (const u of users?.users || []) this.see("User", u);
  }

  connect() {
    this.socket = io(base, { reconnectionDelay: 100, reconnectionDelayMax: 1000, timeout: 5000 });
    this.socket.on("connect", async () => {
      stats.sockets.connects += 1;
      this.socket.emit("ping_user", this.user.token);
      if (this.everConnected) {
        stats.sockets.reconnects += 1;
        await this.catchUp();
      }
      this.everConnected = true;
    });
    this.socket.on("connect_error", (e) => {
      stats.sockets.connect_errors += 1;
      // A refused handshake or poll is a failed HTTP request.
      failure(`Socket.IO connect (${this.nickname}): ${e.message}`);
    });
    this.socket.on("disconnect", (reason) => {
      stats.sockets.disconnects[reason] = (stats.sockets.disconnects[reason] || 0) + 1;
    });
    this.socket.on("updated_model", (event) => this.see(event.class, event.model));
    this.socket.on("expired_token", () => failure(`expired_token to ${this.nickname}`));
    this.pinger = setInterval(() => this.socket.emit("ping_user", this.user.token), 10000);
  }

  // Posts one message and waits for its acknowledgement; without one in
  // 5 s (the socket was cut, the instance stopped), sends it again with the
  // same client_key, which the service stores once.
  async post() {
    const n = (this.sent += 1);
    const source = `${this.nickname} #${n}`;
    const data = { source, client_key: `${this.nickname}-${n}` };
    for (let attempt = 0; attempt < 6; attempt += 1) {
      if (attempt > 0) stats.posts.socket_resent += 1;
      try {
        const reply = await this.socket.timeout(5000).emitWithAck("post_message", data, this.user.token);
        if (reply && reply.id) stats.posts.socket_acked += 1;
        else {
          stats.posts.socket_refused += 1;
          failure(`post_message refused: ${JSON.stringify(reply)}`);
        }
        return;
      } catch {
        // No acknowledgement yet: send it again.
      }
    }
    stats.posts.socket_unacked += 1;
  }

  async postLoop() {
    await sleep(Math.random() * INTERVAL);
    while (!stopping) {
      await this.post();
      await sleep(INTERVAL * (0.5 + Math.random()));
    }
  }

  close() {
    clearInterval(this.pinger);
    this.socket.close();
  }
}

async function reader(n, user) {
  let since = Math.floor(Date.now() / 1000) - 1;
  for (let i = 0; !stopping; i += 1) {
    const messages = await request("GET", `/api/messages?updated_since=${since}`);
    for (const m of messages?.messages || []) if (m.updated_at > since) since = m.updated_at;
    await request("GET", "/api/users");
    if (i % 10 === 5) {
      await request("POST", "/api/tokens", { headers: { Authorization: basic(user.nickname, user.password) } });
    }
    if (i % 10 === 0) {
      const created = await request("POST", "/api/messages", {
        headers: { Authorization: `Bearer ${user.token}` },
        body: { source: `${marker}-r${n} #${i}` },
      });
      if (created) stats.posts.rest_created += 1;
    }
    await sleep(50);
  }
}

(async () => {
  const started = Date.now();
  const clients = [];
  for (let n = 0; n < CLIENTS; n += 1) {
    const c = new Client(n, null);
    c.user = await signUp(c.nickname, "load-password");
    clients.push(c);
  }
  const readers = [];
  for (let n = 0; n < READERS; n += 1) {
    const nickname = `${marker}-r${n}`;
    readers.push({ nickname, password: "load-password", ...(await signUp(nickname, "load-password")) });
  }
  if (stats.http.failed) throw new Error(`setup failed: ${JSON.stringify(stats.http.failures)}`);
  for (const c of clients) c.connect();
  for (let i = 0; i < 200 && !clients.every((c) => c.socket.connected && c.online); i += 1) await sleep(50);
  if (!clients.every((c) => c.socket.connected && c.online)) throw new Error("clients did not all connect and go online");
  for (const c of clients) await c.catchUp();
  measuring = true;
  if (readyFile) fs.writeFileSync(readyFile, "ready\n");
  console.error(`load ${run}: ${CLIENTS} Socket.IO clients and ${READERS} REST readers running`);

  const loops = [...clients.map((c) => c.postLoop()), ...readers.map((r, n) => reader(n, r))];
  process.on("SIGTERM", () => (stopping = true));
  while (!stopping && !fs.existsSync(stopFile)) await sleep(100);
  stopping = true;
  await Promise.all(loops);

  // The last pushes arrive; a client still reconnecting catches up.
  for (let i = 0; i < 100 && !clients.every((c) => c.socket.connected); i += 1) await sleep(100);
  await sleep(2000);

  const all = (await request("GET", "/api/messages?updated_since=0"))?.messages || [];
  const stored = all.filter(ours);
  const storedIds = new Set(stored.map((m) => m.id));
  const posted = stats.posts.socket_acked + stats.posts.socket_unacked + stats.posts.rest_created;
  const ourUsers = ((await request("GET", "/api/users"))?.users || []).filter((u) => u.nickname.startsWith(`${marker}-c`));
  let missing = 0;
  let clientsMissing = 0;
  for (const c of clients) {
    const lacking = [...storedIds].filter((id) => !c.received.has(id)).length;
    missing += lacking;
    if (lacking) clientsMissing += 1;
  }
  for (const c of clients) c.close();

  const summary = {
    run,
    seconds: Math.round((Date.now() - started) / 100) / 10,
    clients: CLIENTS,
    readers: READERS,
    interval_ms: INTERVAL,
    http: stats.http,
    posts: {
      ...stats.posts,
      posted,
      stored: stored.length,
      lost: Math.max(0, posted - stored.length),
    },
    delivery: {
      messages: stored.length,
      clients_missing_some: clientsMissing,
      missing_total: missing,
    },
    sockets: stats.sockets,
    offline_flips: new Set(stats.offline_flips.map((f) => f.user)).size,
    offline_flip_examples: stats.offline_flips.slice(0, 5),
    offline_at_end: ourUsers.filter((u) => !u.online).length,
  };
  const text = JSON.stringify(summary, null, 2);
  fs.writeFileSync(summaryFile, text + "\n");
  console.log(text);
  const clean =
    summary.posts.socket_acked > 0 &&
    summary.http.failed === 0 &&
    summary.posts.lost === 0 &&
    summary.posts.socket_unacked === 0 &&
    summary.posts.socket_refused === 0 &&
    summary.delivery.missing_total === 0 &&
    summary.offline_flips === 0;
  process.exit(clean ? 0 : 1);
})().catch((e) => {
  console.error(`load: ${e.message}`);
  process.exit(2);
});
