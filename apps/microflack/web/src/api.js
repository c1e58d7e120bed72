// The HTTP API: JSON in and out, the bearer token of the session, and
// failures as ApiError (with the server's own explanation when it gave one).

/** A failed call: `status` is 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let token = null;
let onUnauthorized = () => {};

/** The token sent with every call from now on (null: none). */
export function setToken(value) {
  token = value;
}

/** Called when a call that carried the token is answered 401. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/**
 * Calls the API. `auth`: send the session's token (default) or not;
 * `headers` are added as they are.
 */
export async function call(method, path, { body, headers = {}, auth = true } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  const sent = auth ? token : null;
  if (sent) {
    init.headers.Authorization = `Bearer ${sent}`;
  }
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "the server cannot be reached");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && sent && sent === token) {
      onUnauthorized();
    }
    const message = (data && (data.message || data.error)) || response.statusText;
    throw new ApiError(response.status, message);
  }
  return data;
}

/** A Basic `Authorization` header; UTF-8, so any password works. */
export function basic(nickname, password) {
  const bytes = new TextEncoder().encode(`${nickname}:${password}`);
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return `Basic ${btoa(binary)}`;
}

/** The `user_id` claim of a token (null if it cannot be read). */
export function userIdOf(jwt) {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).user_id ?? null;
  } catch {
    return null;
  }
}
