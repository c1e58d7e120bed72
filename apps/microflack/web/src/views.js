// What the page shows: the participants and the messages. Every string a
// user typed is set with textContent; only a message's `html`, which the
// server rendered and sanitised, is set as HTML.

const userList = document.getElementById("user-list");
const messageList = document.getElementById("message-list");
const messagePane = document.getElementById("messages");

/** A user's colour: one of 120 hues, from their nickname (as the original). */
export function colorOf(nickname) {
  let sum = 0;
  for (let i = 0; i < nickname.length; i += 1) {
    sum += nickname.charCodeAt(i);
  }
  return `hsl(${(sum % 120) * 3} 70% 36%)`;
}

function nameOf(users, userId) {
  const user = users.get(userId);
  return user ? user.nickname : `user ${userId}`;
}

function paintAuthor(span, users, userId) {
  const user = users.get(userId);
  span.textContent = nameOf(users, userId);
  span.style.color = user ? colorOf(user.nickname) : "";
}

/** Shows a user (new or changed) in the participants, in nickname order,
 * and their name on their messages. */
export function showUser(user, users) {
  let item = userList.querySelector(`li[data-id="${user.id}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.id = String(user.id);
    const dot = document.createElement("span");
    dot.className = "dot";
    const name = document.createElement("span");
    name.className = "name";
    item.append(dot, name);
  }
  const name = item.querySelector(".name");
  name.textContent = user.nickname;
  name.style.color = colorOf(user.nickname);
  item.classList.toggle("online", user.online);
  item.classList.toggle("offline", !user.online);
  item.title = user.online ? "online" : "offline";
  item.querySelector(".dot").setAttribute("aria-label", item.title);
  // Insert in nickname order.
  item.remove();
  const after = [...userList.children].find(
    (other) => other.querySelector(".name").textContent.localeCompare(user.nickname) > 0,
  );
  userList.insertBefore(item, after ?? null);
  for (const span of messageList.querySelectorAll(`.author[data-user-id="${user.id}"]`)) {
    paintAuthor(span, users, user.id);
  }
}

function timeOf(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function atBottom() {
  return messagePane.scrollHeight - messagePane.scrollTop - messagePane.clientHeight < 8;
}

/** Shows a message (new or changed), in posting order; the pane stays at
 * the bottom if it was there. */
export function showMessage(message, users, me) {
  const stick = atBottom();
  let item = messageList.querySelector(`li[data-id="${message.id}"]`);
  if (!item) {
    item = document.createElement("li");
    item.className = "message";
    item.dataset.id = String(message.id);
    item.dataset.created = String(message.created_at);
    const author = document.createElement("span");
    author.className = "author";
    author.dataset.userId = String(message.user_id);
    const time = document.createElement("time");
    const body = document.createElement("div");
    body.className = "body";
    item.append(author, time, body);
    const after = [...messageList.children].find((other) => {
      const created = Number(other.dataset.created);
      return created > message.created_at ||
        (created === message.created_at && Number(other.dataset.id) > message.id);
    });
    messageList.insertBefore(item, after ?? null);
  }
  item.classList.toggle("mine", message.user_id === me);
  paintAuthor(item.querySelector(".author"), users, message.user_id);
  const time = item.querySelector("time");
  time.dateTime = new Date(message.created_at * 1000).toISOString();
  time.textContent = timeOf(message.created_at);
  // Sanitised by the server (a whitelist of inline tags and links).
  item.querySelector(".body").innerHTML = message.html;
  if (stick) {
    messagePane.scrollTop = messagePane.scrollHeight;
  }
}

/** Marks the messages of the signed-in user (null: nobody). */
export function markMine(me) {
  for (const item of messageList.children) {
    const author = item.querySelector(".author");
    item.classList.toggle("mine", me !== null && Number(author.dataset.userId) === me);
  }
}
