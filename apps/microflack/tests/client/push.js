// A stock Socket.IO 4 client against the push service.
// Usage: node push.js BASE_URL TOKEN USER_ID
// Prints one line per step; exits 0 when every step passed.
const { io } = require("socket.io-client");

const [base, token, userIdText] = process.argv.slice(2);
const userId = Number(userIdText);
const fail = (why) => {
  console.log(`FAIL ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 15000);

const waitFor = (socket, event, predicate) =>
  new Promise((resolve) => {
    const handler = (...args) => {
      if (predicate(...args)) {
        socket.off(event, handler);
        resolve(args);
      }
    };
    socket.on(event, handler);
  });

const connected = (socket) =>
  new Promise((resolve, reject) => {
    socket.on("connect", resolve);
    socket.on("connect_error", reject);
  });

(async () => {
  // A starts with long polling and upgrades; B uses WebSocket only.
  const a = io(base, { reconnection: false });
  const b = io(base, { reconnection: false, transports: ["websocket"] });
  await Promise.all([connected(a), connected(b)]);
  console.log("connected");

  // A refused token: expired_token to that socket only.
  let bGotExpired = false;
  b.on("expired_token", () => {
    bGotExpired = true;
  });
  const expired = waitFor(a, "expired_token", () => true);
  a.emit("ping_user", "not-a-token");
  const [payload] = await expired;
  if (payload !== null && payload !== undefined) fail(`expired_token payload ${payload}`);
  await new Promise((r) => setTimeout(r, 300));
  if (bGotExpired) fail("expired_token reached another socket");
  b.off("expired_token");
  console.log("expired_token to the offending socket only");

  // A ping marks the user online; every client hears it.
  const online = waitFor(b, "updated_model", (m) => m.class === "User" && m.model.id === userId && m.model.online === true);
  a.emit("ping_user", token);
  await online;
  console.log("ping_user: User online pushed");

  // A posted message reaches everyone, rendered.
  const onA = waitFor(a, "updated_model", (m) => m.class === "Message" && m.model.html === "hi <em>there</em>");
  const onB = waitFor(b, "updated_model", (m) => m.class === "Message" && m.model.html === "hi <em>there</em>" && m.model.user_id === userId);
  a.emit("post_message", { source: "hi *there*", id: null, html: null }, token);
  await Promise.all([onA, onB]);
  console.log("post_message: Message pushed to every client");

  // post_message with a refused token: expired_token.
  const expiredPost = waitFor(b, "expired_token", () => true);
  b.emit("post_message", { source: "nope" }, "bad");
  await expiredPost;
  console.log("post_message with a refused token: expired_token");

  // A disconnects: its user goes offline, pushed to B.
  const offline = waitFor(b, "updated_model", (m) => m.class === "User" && m.model.id === userId && m.model.online === false);
  a.disconnect();
  await offline;
  console.log("disconnect: User offline pushed");
  b.disconnect();
  console.log("PASS");
  process.exit(0);
})().catch((e) => fail(e && e.message ? e.message : String(e)));
