// MicroFlack's page in headless Chromium, driven by playwright-core.
//
//   node chat.mjs <base URL> <screenshot folder> socketio|polling
//
// Serves a small page of its own on a free loopback port (for a link
// preview), runs the scenario of the mode, prints one line per step and
// exits 0 only when every step passed. Every wait is bounded.

import { chromium } from "playwright-core";
import http from "node:http";
import path from "node:path";
import fs from "node:fs";

const [base, shots, mode = "socketio"] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node chat.mjs <base URL> <screenshot folder> socketio|polling");
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** A change must reach the other page within this (socket mode: 1 s). */
const LIVE_WITHIN = mode === "polling" ? 2_500 : 1_000;
/** Anything else the page does (sign-in, previews, reconnects). */
const WAIT = 10_000;

fs.mkdirSync(shots, { recursive: true });

let failures = 0;
async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failures += 1;
    console.log(`not ok - ${name}: ${e && e.message ? e.message.split("\n")[0] : e}`);
    throw e;
  }
}

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

/** A page with a title, a description and Open Graph tags, for a preview. */
function previewServer() {
  const server = http.createServer((request, response) => {
    response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    response.end(`<!doctype html><html><head><title>The local page</title>
<meta name="description" content="A page the browser test serves">
<meta property="og:title" content="The local page">
<meta property="og:description" content="A page the browser test serves">
</head><body>local</body></html>`);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

const browser = await chromium.launch({ executablePath: CHROMIUM, timeout: 30_000 });
const pageErrors = [];

async function open(name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 560 } });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content.Security.Policy|Uncaught/i.test(m.text())) {
      pageErrors.push(`${name}: ${m.text()}`);
    }
  });
  return { name, context, page };
}

async function load(user) {
  await user.page.goto(base, { timeout: WAIT });
  await user.page.locator("#connection[data-state=live]").waitFor();
}

async function signIn(user, nickname, password) {
  const { page } = user;
  await page.fill("#nickname", nickname);
  await page.fill("#password", password);
  await page.click("#login-form button[type=submit]");
}

async function signedIn(user, nickname) {
  await user.page.locator("#post-form").waitFor({ state: "visible" });
  const me = await user.page.textContent("#me");
  check(me === nickname, `${user.name} is signed in as ${JSON.stringify(me)}`);
}

function participant(user, nickname, state) {
  return user.page.locator(`#user-list li.${state}`).filter({
    has: user.page.locator(".name").getByText(nickname, { exact: true }),
  });
}

async function post(user, source) {
  await user.page.fill("#source", source);
  await user.page.press("#source", "Enter");
}

/** The last message shown, as `{author, text, html}`. */
async function lastMessage(user) {
  return user.page.evaluate(() => {
    const items = document.querySelectorAll("#message-list li");
    const item = items[items.length - 1];
    return item && {
      id: Number(item.dataset.id),
      author: item.querySelector(".author").textContent,
      text: item.querySelector(".body").textContent,
      html: item.querySelector(".body").innerHTML,
    };
  });
}

async function shoot(user, file) {
  await user.page.screenshot({ path: path.join(shots, file) });
  console.log(`screenshot ${path.join(shots, file)}`);
}

function token(user) {
  return user.page.evaluate(() => JSON.parse(sessionStorage.getItem("microflack.session") || "null")?.token ?? null);
}

async function socketScenario() {
  const preview = await previewServer();
  const local = `http://127.0.0.1:${preview.address().port}/about`;
  const susan = await open("susan");
  const david = await open("david");

  // david's Socket.IO traffic goes through the test, which can cut it.
  let cut = false;
  const sockets = new Set();
  await david.page.routeWebSocket(/\/socket\.io\//, (ws) => {
    if (cut) {
      ws.close();
      return;
    }
    const server = ws.connectToServer();
    sockets.add({ ws, server });
  });
  await david.page.route(/\/socket\.io\//, (route) => (cut ? route.abort() : route.continue()));

  await step("both pages load and go live over Socket.IO", async () => {
    await load(susan);
    await load(david);
    check((await susan.page.title()) === "MicroFlack!", "title");
  });

  await step("a failed registration says why", async () => {
    await signIn(susan, "   ", "pw");
    await susan.page.locator("#login-error").getByText("Registration failed").waitFor();
  });

  await step("susan and david register and sign in", async () => {
    await signIn(susan, "susan", "dog-Ünïcode-pass");
    await signedIn(susan, "susan");
    await signIn(david, "david", "cat");
    await signedIn(david, "david");
    check(!(await susan.page.isVisible("#login-error")), "the error is cleared");
  });

  await step("each sees the other online", async () => {
    await participant(susan, "david", "online").waitFor();
    await participant(david, "susan", "online").waitFor();
  });

  let susansMessage = 0;
  await step("susan's message reaches david's page within 1 s, markdown rendered", async () => {
    await post(susan, "hello **world**");
    await david.page.locator("#message-list .body strong").getByText("world", { exact: true })
      .waitFor({ timeout: LIVE_WITHIN });
    const last = await lastMessage(david);
    check(last.author === "susan", `author ${last.author}`);
    check(last.html === "hello <strong>world</strong>", `html ${last.html}`);
    susansMessage = last.id;
  });

  await step("david's reply reaches susan's page within 1 s", async () => {
    await post(david, "hi *susan*, how are you?");
    await susan.page.locator("#message-list .body em").getByText("susan", { exact: true })
      .waitFor({ timeout: LIVE_WITHIN });
    check((await lastMessage(susan)).author === "david", "author");
    check(await susan.page.isHidden("#message-list li.mine:last-child"), "not susan's own");
  });

  await step("a link gets a preview of the local page", async () => {
    await post(susan, `have a look at ${local}`);
    const quote = david.page.locator("#message-list blockquote").filter({ hasText: "The local page" });
    await quote.waitFor();
    check((await quote.textContent()).includes("A page the browser test serves"), "description");
    await susan.page.locator("#message-list blockquote").waitFor();
  });

  await step("screenshots of the chat", async () => {
    await shoot(susan, "chat-susan.png");
    await shoot(david, "chat-david.png");
  });

  await step("david cannot edit susan's message (403, nothing changes)", async () => {
    const status = await david.page.evaluate(async (id) => {
      const { token } = JSON.parse(sessionStorage.getItem("microflack.session"));
      const response = await fetch(`/api/messages/${id}`, {
        method: "PUT",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ source: "edited by david" }),
      });
      return response.status;
    }, susansMessage);
    check(status === 403, `status ${status}`);
    const stored = await (await fetch(`${base}/api/messages/${susansMessage}`)).json();
    check(stored.source === "hello **world**", `stored ${stored.source}`);
    const shown = await susan.page.textContent(`#message-list li[data-id="${susansMessage}"] .body`);
    check(shown === "hello world", `shown ${shown}`);
  });

  const mallory = await open("mallory");
  const nasty = "<img src=x onerror=xss=1>";
  await step("a wrong password shows an error", async () => {
    await load(mallory);
    await signIn(mallory, "susan", "not-her-password");
    await mallory.page.locator("#login-error").getByText("Invalid nickname or password").waitFor();
    check(await mallory.page.isVisible("#login-form"), "still signed out");
  });

  await step("HTML in a nickname and a message is shown as text", async () => {
    await signIn(mallory, nasty, "pw");
    await signedIn(mallory, nasty);
    await post(mallory, "`<script>alert(1)</script>` <script>xss=2</script><img src=x onerror=xss=3> <b onclick=xss=4>bold</b>");
    for (const user of [susan, david]) {
      const body = user.page.locator("#message-list li").last().locator(".body");
      await body.getByText("<script>alert(1)</script>").waitFor({ timeout: LIVE_WITHIN });
      await participant(user, nasty, "online").waitFor();
      const found = await user.page.evaluate(() => ({
        elements: document.querySelectorAll(
          "#message-list script, #message-list img, #user-list img, #user-list script, [onclick], [onerror]",
        ).length,
        xss: typeof window.xss,
        author: document.querySelector("#message-list li:last-child .author").textContent,
      }));
      check(found.elements === 0, `${user.name}: ${found.elements} elements were created`);
      check(found.xss === "undefined", `${user.name}: a script ran`);
      check(found.author === nasty, `${user.name}: author shown as ${found.author}`);
    }
    await shoot(susan, "xss-as-text.png");
  });

  await step("a revoked token signs the page out with a message", async () => {
    const revoked = await token(mallory);
    const response = await fetch(`${base}/api/tokens`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${revoked}` },
    });
    check(response.status === 204, `revoke: ${response.status}`);
    // The revocation reaches the push service by an event: a post sent
    // before it arrives is still accepted, so try a few times.
    const expired = mallory.page.locator("#notice").getByText("session has expired");
    for (let attempt = 1; !(await expired.isVisible()); attempt += 1) {
      check(attempt <= 5, "no expired_token after 5 posts");
      await post(mallory, `still here? (${attempt})`);
      await expired.waitFor({ timeout: 1_000 }).catch(() => {});
    }
    check(await mallory.page.isVisible("#login-form"), "signed out");
  });

  await step("david's connection drops: the page says so, then catches up", async () => {
    cut = true;
    for (const { ws, server } of sockets) {
      server.close();
      ws.close();
    }
    sockets.clear();
    await david.page.locator("#connection[data-state=disconnected]").waitFor();
    await shoot(david, "reconnecting.png");
    await post(susan, "did you miss this?");
    await susan.page.locator("#message-list .body").getByText("did you miss this?").waitFor();
    check(
      (await david.page.locator("#message-list .body").getByText("did you miss this?").count()) === 0,
      "the message reached david while cut off",
    );
    cut = false;
    await david.page.locator("#connection[data-state=live]").waitFor({ timeout: 15_000 });
    await david.page.locator("#message-list .body").getByText("did you miss this?").waitFor();
    await participant(david, "susan", "online").waitFor();
  });

  await step("the message pane follows new messages to the bottom", async () => {
    for (let i = 1; i <= 12; i += 1) {
      await post(david, `line ${i} of a long story`);
      await susan.page.locator("#message-list .body").getByText(`line ${i} of a long story`).waitFor();
    }
    const pane = await susan.page.evaluate(() => {
      const el = document.getElementById("messages");
      return { overflows: el.scrollHeight > el.clientHeight, gap: el.scrollHeight - el.scrollTop - el.clientHeight };
    });
    check(pane.overflows, "the messages overflow the pane");
    check(pane.gap < 8, `the pane is ${pane.gap} px from the bottom`);
  });

  await step("david reloads and is still signed in", async () => {
    const before = await david.page.locator("#message-list li").count();
    await david.page.reload({ timeout: WAIT });
    await david.page.locator("#connection[data-state=live]").waitFor();
    await signedIn(david, "david");
    await david.page.locator(`#message-list li:nth-child(${before})`).waitFor();
    await participant(susan, "david", "online").waitFor();
  });

  await step("susan signs out: david sees her go offline, her token is revoked", async () => {
    const old = await token(susan);
    await susan.page.click("#sign-out");
    await susan.page.locator("#login-form").waitFor({ state: "visible" });
    check((await token(susan)) === null, "the session is forgotten");
    await participant(david, "susan", "offline").waitFor();
    const response = await fetch(`${base}/api/messages`, { headers: { Authorization: `Bearer ${old}` } });
    check(response.status === 401, `the old token is refused: ${response.status}`);
    await shoot(david, "signed-out.png");
  });

  await mallory.context.close();
  preview.close();
}

async function pollingScenario() {
  const susan = await open("susan");
  const david = await open("david");
  await step("both pages load and poll (NO_SOCKETIO)", async () => {
    await load(susan);
    await load(david);
    const text = await susan.page.textContent("#connection");
    check(text.includes("polling"), `connection: ${text}`);
  });
  await step("susan and david sign in and see each other online", async () => {
    await signIn(susan, "susan", "dog");
    await signedIn(susan, "susan");
    await signIn(david, "david", "cat");
    await signedIn(david, "david");
    await participant(susan, "david", "online").waitFor();
    await participant(david, "susan", "online").waitFor();
  });
  await step("a message posted over the API reaches the other page by polling", async () => {
    await post(susan, "polling **works**");
    await david.page.locator("#message-list .body strong").getByText("works", { exact: true })
      .waitFor({ timeout: LIVE_WITHIN });
    check((await lastMessage(david)).author === "susan", "author");
    await shoot(david, "polling-chat.png");
  });
  await step("susan signs out: david sees her go offline", async () => {
    await susan.page.click("#sign-out");
    await susan.page.locator("#login-form").waitFor({ state: "visible" });
    await participant(david, "susan", "offline").waitFor();
  });
}

try {
  await (mode === "polling" ? pollingScenario() : socketScenario());
  await step("no script error and no CSP violation on any page", async () => {
    check(pageErrors.length === 0, pageErrors.join("; "));
  });
} catch {
  // Reported by its step.
} finally {
  await browser.close();
}
console.log(failures === 0 ? "PASS" : `FAIL (${failures})`);
process.exit(failures === 0 ? 0 : 1);
