// Live updates, two ways: Socket.IO (`updated_model` pushed, `ping_user`,
// `post_message`, `expired_token`), or polling the API every second when
// the server says the page must do without Socket.IO.

import { io } from "socket.io-client";
import * as api from "./api.js";

/** How often a signed-in page pings over Socket.IO (as the original). */
export const PING_EVERY_MS = 30_000;
/** How often the polling fallback asks for changes. */
export const POLL_EVERY_MS = 1_000;

/**
 * Socket.IO. `hooks`: `connected()` (every connect, the first included),
 * `disconnected(reason)`, `reconnecting(attempt)`, `model(event)`,
 * `expired()`.
 */
export function socketLive(hooks) {
  const socket = io({ reconnectionDelayMax: 5_000 });
  socket.on("connect", () => hooks.connected());
  socket.on("disconnect", (reason) => hooks.disconnected(reason));
  socket.io.on("reconnect_attempt", (attempt) => hooks.reconnecting(attempt));
  socket.on("updated_model", (event) => hooks.model(event));
  socket.on("expired_token", () => hooks.expired());
  return {
    mode: "socketio",
    isConnected: () => socket.connected,
    ping(token) {
      if (socket.connected) {
        socket.emit("ping_user", token);
      }
    },
    // Acknowledged: without an answer in 10 s (the connection was cut, the
    // server instance stopped) the post is sent again with the same
    // client_key, which the server stores once.
    async post(source, token) {
      if (!socket.connected) {
        throw new api.ApiError(0, "not connected: wait for the connection to come back");
      }
      const data = { source, client_key: clientKey() };
      for (let attempt = 0; attempt < 5; attempt += 1) {
        let reply;
        try {
          reply = await socket.timeout(10_000).emitWithAck("post_message", data, token);
        } catch {
          continue;
        }
        if (reply && reply.error) {
          throw new api.ApiError(400, reply.error);
        }
        return reply;
      }
      throw new api.ApiError(0, "no answer from the server");
    },
  };
}

/**
 * Polling: `poll()` every POLL_EVERY_MS, one at a time. `hooks.connected`
 * is called once, when polling starts.
 */
export function pollingLive(hooks, poll) {
  const loop = async () => {
    await poll();
    setTimeout(loop, POLL_EVERY_MS);
  };
  queueMicrotask(() => {
    hooks.connected();
    setTimeout(loop, POLL_EVERY_MS);
  });
  return {
    mode: "polling",
    isConnected: () => true,
    ping() {},
    // A post cut on its way is sent again with the same client_key.
    async post(source) {
      const body = { source, client_key: clientKey() };
      for (let attempt = 0; ; attempt += 1) {
        try {
          return await api.call("POST", "/api/messages", { body });
        } catch (e) {
          const retry = e.status === 0 || e.status === 502 || e.status === 503;
          if (!retry || attempt >= 3) {
            throw e;
          }
          await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
        }
      }
    },
  };
}

/** A random key that makes one post idempotent. */
function clientKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
