// MicroFlack's page: the session (kept in sessionStorage, so a reload keeps
// it), the users and messages it knows, and the forms.

import * as api from "./api.js";
import { markMine, showMessage, showUser } from "./views.js";
import { PING_EVERY_MS, pollingLive, socketLive } from "./live.js";

const SESSION_KEY = "microflack.session";
const EXPIRED = "Your session has expired. Please sign in again.";

const $ = (id) => document.getElementById(id);
const loginForm = $("login-form");
const postForm = $("post-form");
const loginError = $("login-error");
const postError = $("post-error");
const connection = $("connection");
const notice = $("notice");

/** What the page knows: users and messages by id, and for each the latest
 * `updated_at` seen (where a catch-up starts, inclusive). */
const users = new Map();
const messages = new Map();
const cursor = { users: 0, messages: 0 };

/** The signed-in user: `{token, nickname, userId}` or null. */
let session = null;
let pingTimer = null;

function mergeUser(user) {
  const known = users.get(user.id);
  if (known && (known.updated_at > user.updated_at ||
      (known.updated_at === user.updated_at && known.online === user.online &&
       known.nickname === user.nickname))) {
    return;
  }
  users.set(user.id, user);
  cursor.users = Math.max(cursor.users, user.updated_at);
  showUser(user, users);
}

function mergeMessage(message) {
  const known = messages.get(message.id);
  if (known && (known.updated_at > message.updated_at ||
      (known.updated_at === message.updated_at && known.html === message.html))) {
    return;
  }
  messages.set(message.id, message);
  cursor.messages = Math.max(cursor.messages, message.updated_at);
  showMessage(message, users, session ? session.userId : null);
}

function onModel(event) {
  if (event && event.class === "User" && event.model) {
    mergeUser(event.model);
  } else if (event && event.class === "Message" && event.model) {
    mergeMessage(event.model);
  }
}

const polling = document.body.dataset.socketio === "false";

/** Everything changed since the cursors (inclusive): the first load, a
 * catch-up after a reconnect, or one poll. One at a time. */
let syncing = Promise.resolve(true);
function sync() {
  const run = async () => {
    try {
      // Polling: the token with each poll is what keeps the user online.
      const auth = polling;
      const [u, m] = await Promise.all([
        api.call("GET", `/api/users?updated_since=${cursor.users}`, { auth }),
        api.call("GET", `/api/messages?updated_since=${cursor.messages}`, { auth }),
      ]);
      u.users.forEach(mergeUser);
      m.messages.forEach(mergeMessage);
      if (polling) {
        setConnection("live", "Live (polling)");
      }
      return true;
    } catch (e) {
      if (polling && e.status === 0) {
        setConnection("disconnected", "Disconnected — retrying…");
      }
      return false;
    }
  };
  syncing = syncing.then(run, run);
  return syncing;
}

function setConnection(state, text) {
  connection.dataset.state = state;
  connection.textContent = text;
  document.body.classList.toggle("offline", state === "disconnected");
}

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

const live = polling
  ? pollingLive({ connected: () => sync() }, sync)
  : socketLive({
    async connected() {
      setConnection("live", "Live");
      if (session) {
        live.ping(session.token);
        // After a reload the server may see the old socket close after
        // this ping (and mark the user offline): ping again shortly.
        setTimeout(() => session && live.ping(session.token), 3_000);
      }
      // The first load, or the catch-up after a reconnect; retried while
      // the socket is up.
      while (!(await sync()) && live.isConnected()) {
        await new Promise((resolve) => setTimeout(resolve, 2_000));
      }
    },
    disconnected() {
      setConnection("disconnected", "Disconnected — reconnecting…");
    },
    reconnecting(attempt) {
      setConnection("disconnected", `Disconnected — reconnecting (attempt ${attempt})…`);
    },
    model: onModel,
    expired: () => signOut({ revoke: false, message: EXPIRED }),
  });

function showSignedIn() {
  const signedIn = session !== null;
  loginForm.hidden = signedIn;
  postForm.hidden = !signedIn;
  $("account").hidden = !signedIn;
  $("me").textContent = signedIn ? session.nickname : "";
  markMine(signedIn ? session.userId : null);
  (signedIn ? $("source") : $("nickname")).focus();
}

function begin(token, nickname) {
  session = { token, nickname, userId: api.userIdOf(token) };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  api.setToken(token);
  live.ping(token);
  clearInterval(pingTimer);
  pingTimer = setInterval(() => session && live.ping(session.token), PING_EVERY_MS);
  showSignedIn();
}

/** Signs out: with `revoke`, the user goes offline and the token is revoked
 * on the server; `message` says why. */
async function signOut({ revoke, message = "" }) {
  const ended = session;
  clearInterval(pingTimer);
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  api.setToken(null);
  showNotice(message);
  showSignedIn();
  if (revoke && ended) {
    // No poll may carry the token after the sign-off.
    await syncing;
    const headers = { Authorization: `Bearer ${ended.token}` };
    for (const path of ["/api/users/me", "/api/tokens"]) {
      try {
        await api.call("DELETE", path, { auth: false, headers });
      } catch {
        // Already expired or revoked: nothing more to do.
      }
    }
  }
}

api.setUnauthorizedHandler(() => {
  if (session) {
    signOut({ revoke: false, message: EXPIRED });
  }
});

async function signIn(nickname, password) {
  loginError.textContent = "";
  showNotice("");
  const known = [...users.values()].some((u) => u.nickname === nickname);
  if (!known) {
    try {
      await api.call("POST", "/api/users", { body: { nickname, password }, auth: false });
    } catch (e) {
      // Taken by someone not loaded yet: try to sign in as them.
      if (!(e.status === 400 && /taken/.test(e.message))) {
        loginError.textContent = `Registration failed: ${e.message}.`;
        $("nickname").focus();
        return;
      }
    }
  }
  try {
    const { token } = await api.call("POST", "/api/tokens", {
      auth: false,
      headers: { Authorization: api.basic(nickname, password) },
    });
    $("password").value = "";
    begin(token, nickname);
  } catch (e) {
    loginError.textContent = e.status === 401
      ? "Invalid nickname or password. Please try again."
      : `Sign-in failed: ${e.message}.`;
    $("nickname").focus();
  }
}

loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("nickname").value.trim(), $("password").value);
});

postForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("source");
  const source = input.value;
  if (!session || !source.trim()) {
    return;
  }
  postError.textContent = "";
  // Cleared at once (the next message may be typed while this one waits for
  // its acknowledgement); given back if it could not be sent.
  input.value = "";
  try {
    await live.post(source, session.token);
  } catch (e) {
    if (!input.value) {
      input.value = source;
    }
    postError.textContent = `Not sent: ${e.message}.`;
  }
});

$("sign-out").addEventListener("click", () => signOut({ revoke: true, message: "Signed out." }));

// A reload keeps the session (this tab only).
try {
  const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  if (saved && typeof saved.token === "string" && typeof saved.nickname === "string") {
    begin(saved.token, saved.nickname);
  } else {
    showSignedIn();
  }
} catch {
  showSignedIn();
}
