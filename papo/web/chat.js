// The chat page. Everything users wrote is put on the page with textContent, never as
// HTML, so a message can only ever be text.
import { Auth, Socket, describeError } from "./papo.js";
import { el, show, hide, toast, wireSignIn } from "./ui.js";

const TYPING_SEND_EVERY_MS = 2000;
const TYPING_IDLE_MS = 3000;
const TYPING_SHOWN_MS = 6000;

const auth = new Auth();
const socket = new Socket(auth, { onEvent, onStatus, onResumed });
const rooms = new Map(); // id -> room state
const pending = new Map(); // client id -> {room, text}
let active = null;
let registering = false;
let typingSentAt = 0;
let typingRoom = null;
let typingIdle = null;
let readTimer = null;

const $ = (id) => document.getElementById(id);

// --- rooms -------------------------------------------------------------------------

function roomState(info) {
  let room = rooms.get(info.id);
  if (!room) {
    room = { info, messages: new Map(), unread: 0, online: new Map(), typing: new Map(), loaded: false, hasMore: true, joined: false };
    rooms.set(info.id, room);
  } else {
    room.info = { ...room.info, ...info };
  }
  return room;
}

function roomTitle(room) {
  if (room.info.kind !== "dm") return room.info.name;
  const others = room.info.name.split(" & ").filter((name) => name !== auth.user.display_name);
  return others[0] || room.info.name;
}

async function joinRoom(id, history = 1) {
  const data = await socket.request("room.join", { room: id, history });
  const room = roomState(data.room);
  room.joined = true;
  for (const message of data.history) room.messages.set(message.seq, message);
  room.online = onlineMap(data.online);
  return room;
}

async function loadRooms() {
  const page = await socket.request("room.list", { scope: "mine", limit: 200 });
  for (const info of page.items) roomState(info).unread = info.unread;
  renderRooms();
  await Promise.all(page.items.filter((info) => !rooms.get(info.id).joined).map((info) => joinRoom(info.id).catch(showError)));
  renderRooms();
}

async function openRoom(id) {
  const room = rooms.get(id);
  if (!room) return;
  active = id;
  document.body.classList.remove("show-rooms", "show-people");
  if (!room.joined) await joinRoom(id);
  if (!room.loaded) await loadOlder(room, true);
  await refreshPresence(room);
  markRead(room);
  renderAll();
  $("text").focus();
}

function onlineMap(users) {
  return new Map(users.map((user) => [user.id, user.name]));
}

// Who is online now (after opening a room or coming back from a reconnect).
async function refreshPresence(room) {
  try {
    const presence = await socket.request("presence", { room: room.info.id });
    room.online = onlineMap(presence.online);
  } catch (error) {
    showError(error);
  }
}

async function loadOlder(room, first = false) {
  const oldest = first || room.messages.size === 0 ? null : Math.min(...room.messages.keys());
  const page = await socket.request("history", { room: room.info.id, before: oldest, limit: 50 });
  for (const message of page.messages) room.messages.set(message.seq, message);
  room.loaded = true;
  room.hasMore = page.has_more;
}

function markRead(room) {
  room.unread = 0;
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    const seq = socket.lastSeq.get(room.info.id) || 0;
    if (seq > 0) socket.request("read", { room: room.info.id, seq }).catch(() => null);
  }, 300);
}

// --- server events -----------------------------------------------------------------

function onEvent(event) {
  switch (event.type) {
    case "message":
      return onMessage(event);
    case "message.edited":
    case "message.deleted": {
      const message = rooms.get(event.room)?.messages.get(event.seq);
      if (!message) return;
      if (event.type === "message.edited") Object.assign(message, { text: event.text, edited: true });
      else Object.assign(message, { text: "", deleted: true });
      if (event.room === active) renderMessages();
      return;
    }
    case "presence": {
      const room = rooms.get(event.room);
      if (!room) return;
      for (const user of event.joined) room.online.set(user.id, user.name);
      for (const user of event.left) room.online.delete(user.id);
      if (event.room === active) renderPeople();
      return;
    }
    case "typing": {
      const room = rooms.get(event.room);
      if (!room || event.user.id === auth.user.id) return;
      if (event.active) room.typing.set(event.user.id, { name: event.user.name, until: Date.now() + TYPING_SHOWN_MS });
      else room.typing.delete(event.user.id);
      if (event.room === active) renderTyping();
      return;
    }
    case "room.invited":
      return loadRooms().catch(showError);
    case "room.left":
      rooms.delete(event.room);
      if (active === event.room) active = null;
      return renderAll();
    case "resume.reset": {
      const room = rooms.get(event.room);
      if (!room) return;
      room.messages.clear();
      room.loaded = false;
      if (event.room === active) loadOlder(room, true).then(renderMessages, showError);
      return;
    }
    case "server.error":
      return showError(event.error);
  }
}

function onMessage(message) {
  let room = rooms.get(message.room);
  if (!room) {
    // A direct message in a conversation this page has not seen yet.
    room = roomState({ id: message.room, kind: "dm", name: message.sender.name });
    joinRoom(message.room).then(() => loadRooms()).catch(showError);
  }
  room.messages.set(message.seq, message);
  room.typing.delete(message.sender.id);
  if (message.client_id) pending.delete(message.client_id);
  if (message.room === active && document.visibilityState === "visible") markRead(room);
  else if (message.sender.id !== auth.user.id) room.unread += 1;
  renderRooms();
  if (message.room === active) {
    renderMessages();
    renderTyping();
  }
}

function onStatus(status, detail) {
  document.body.dataset.status = status;
  document.body.dataset.reconnects = String(socket.reconnects);
  const banner = $("status");
  const text = {
    connecting: "Connecting…",
    reconnecting: "Reconnecting… your messages will be sent when the connection is back.",
    offline: "You are offline. papo reconnects when the network is back.",
  }[status];
  if (status === "signed-out") {
    hide(banner);
    signOut(detail);
    return;
  }
  banner.dataset.state = status;
  if (text) {
    banner.textContent = text;
    show(banner);
  } else {
    hide(banner);
  }
}

async function onResumed() {
  document.body.dataset.reconnects = String(socket.reconnects);
  const room = rooms.get(active);
  if (room) {
    await refreshPresence(room);
    markRead(room);
  }
  renderAll();
}

function showError(error) {
  toast($("toast"), describeError(error));
}

// --- rendering ---------------------------------------------------------------------

function renderAll() {
  renderRooms();
  renderHeader();
  renderMessages();
  renderPeople();
  renderTyping();
}

function renderRooms() {
  const sorted = [...rooms.values()].sort((a, b) => roomTitle(a).localeCompare(roomTitle(b)));
  for (const [listId, kinds] of [["rooms", ["public", "private"]], ["dms", ["dm"]]]) {
    const items = sorted
      .filter((room) => kinds.includes(room.info.kind))
      .map((room) => {
        const button = el("button", { type: "button", class: "room", "data-room": room.info.id }, roomTitle(room));
        if (room.info.kind === "private") button.append(el("span", { class: "badge-private", title: "private" }, " 🔒"));
        if (room.unread > 0) button.append(el("span", { class: "unread", "aria-label": `${room.unread} unread` }, String(room.unread)));
        if (room.info.id === active) button.setAttribute("aria-current", "true");
        button.addEventListener("click", () => openRoom(room.info.id).catch(showError));
        return el("li", {}, button);
      });
    $(listId).replaceChildren(...items);
  }
}

function renderHeader() {
  const room = rooms.get(active);
  $("room-title").textContent = room ? roomTitle(room) : "Pick a room";
  $("room-topic").textContent = room ? room.info.topic || "" : "";
  $("leave-room").hidden = !room || room.info.kind === "dm";
  $("composer").hidden = !room;
}

function renderMessages() {
  const room = rooms.get(active);
  const list = $("message-list");
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  if (!room) {
    list.replaceChildren();
    $("older").hidden = true;
    return;
  }
  $("older").hidden = !room.hasMore;
  const items = [...room.messages.values()].sort((a, b) => a.seq - b.seq).map(renderMessage);
  for (const [clientId, draft] of pending) {
    if (draft.room === room.info.id) items.push(el("li", { class: "message pending", "data-client-id": clientId }, el("span", { class: "sender" }, auth.user.display_name), el("p", { class: "text" }, draft.text), el("span", { class: "meta" }, "sending…")));
  }
  list.replaceChildren(...items);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function renderMessage(message) {
  const mine = message.sender.id === auth.user.id;
  const time = new Date(message.ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const item = el(
    "li",
    { class: mine ? "message mine" : "message", "data-seq": String(message.seq) },
    el("span", { class: "sender" }, message.sender.name),
    el("time", { class: "meta", datetime: new Date(message.ts * 1000).toISOString() }, time),
  );
  if (message.deleted) {
    item.append(el("p", { class: "text deleted" }, "message deleted"));
    return item;
  }
  item.append(el("p", { class: "text" }, message.text));
  if (message.edited) item.append(el("span", { class: "meta" }, "(edited)"));
  if (mine) {
    const edit = el("button", { type: "button", class: "link edit", "aria-label": "Edit message" }, "Edit");
    const remove = el("button", { type: "button", class: "link delete", "aria-label": "Delete message" }, "Delete");
    edit.addEventListener("click", () => startEdit(item, message));
    remove.addEventListener("click", () => {
      if (confirm("Delete this message?")) socket.request("message.delete", { room: message.room, seq: message.seq }).catch(showError);
    });
    item.append(el("span", { class: "actions" }, edit, remove));
  }
  return item;
}

function startEdit(item, message) {
  const input = el("textarea", { class: "edit-text", "aria-label": "Edit message", maxlength: "16000" });
  input.value = message.text;
  const save = async () => {
    const text = input.value.trim();
    if (!text || text === message.text) return renderMessages();
    try {
      await socket.request("message.edit", { room: message.room, seq: message.seq, text });
    } catch (error) {
      showError(error);
    }
    renderMessages();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      save();
    } else if (event.key === "Escape") {
      renderMessages();
    }
  });
  item.querySelector(".text").replaceWith(input);
  item.querySelector(".actions")?.remove();
  input.focus();
}

function renderPeople() {
  const room = rooms.get(active);
  const people = room ? [...room.online.entries()].sort((a, b) => a[1].localeCompare(b[1])) : [];
  $("online").replaceChildren(
    ...people.map(([id, name]) => {
      if (id === auth.user.id) return el("li", { class: "person me", "data-user": id }, `${name} (you)`);
      const button = el("button", { type: "button", class: "person", "data-user": id, title: `Message ${name}` }, name);
      button.addEventListener("click", () => openDm(id).catch(showError));
      return el("li", {}, button);
    }),
  );
}

function renderTyping() {
  const room = rooms.get(active);
  const now = Date.now();
  const names = room ? [...room.typing.values()].filter((t) => t.until > now).map((t) => t.name) : [];
  $("typing").textContent = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

// --- actions -----------------------------------------------------------------------

async function openDm(userId) {
  const info = await socket.request("dm.open", { user: userId });
  roomState(info);
  await openRoom(info.id);
}

async function sendTyping(activeNow) {
  if (!active) return;
  try {
    await socket.request("typing", { room: typingRoom || active, active: activeNow });
  } catch {
    /* typing is best effort */
  }
}

function onComposerInput() {
  const now = Date.now();
  if (now - typingSentAt > TYPING_SEND_EVERY_MS) {
    typingSentAt = now;
    typingRoom = active;
    sendTyping(true);
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingIdle);
  if (typingSentAt) {
    typingSentAt = 0;
    sendTyping(false).then(() => (typingRoom = null));
  }
}

async function submitMessage(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text || !active) return;
  input.value = "";
  stopTyping();
  const clientId = crypto.randomUUID();
  pending.set(clientId, { room: active, text });
  renderMessages();
  try {
    await socket.sendMessage(active, text, clientId);
  } catch (error) {
    pending.delete(clientId);
    input.value = text;
    showError(error);
  }
  renderMessages();
}

async function browsePublic() {
  const page = await socket.request("room.list", { scope: "public", limit: 100 });
  $("public-rooms").replaceChildren(
    ...page.items.map((info) => {
      const mine = rooms.get(info.id)?.joined;
      const button = el("button", { type: "button", class: "room", "data-room": info.id }, `${info.name} (${info.members})`);
      if (mine) button.disabled = true;
      button.addEventListener("click", async () => {
        try {
          await joinRoom(info.id);
          $("browse").open = false;
          await openRoom(info.id);
        } catch (error) {
          showError(error);
        }
      });
      return el("li", {}, button);
    }),
  );
}

async function createRoom(event) {
  event.preventDefault();
  const form = event.target;
  const name = form.elements.name.value.trim();
  if (!name) return;
  try {
    const info = await socket.request("room.create", { name, visibility: form.elements.private.checked ? "private" : "public" });
    form.reset();
    await joinRoom(info.id);
    await openRoom(info.id);
  } catch (error) {
    showError(error);
  }
}

async function leaveRoom() {
  if (!active) return;
  try {
    await socket.request("room.leave", { room: active });
    rooms.delete(active);
    active = null;
    renderAll();
  } catch (error) {
    showError(error);
  }
}

// --- signing in --------------------------------------------------------------------

function setMode(register) {
  registering = register;
  $("tab-login").setAttribute("aria-selected", String(!register));
  $("tab-register").setAttribute("aria-selected", String(register));
  $("name-row").hidden = !register;
  $("auth-submit").textContent = register ? "Create account" : "Sign in";
  $("auth-form").elements.password.autocomplete = register ? "new-password" : "current-password";
  $("auth-error").textContent = "";
}

async function signIn(form) {
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  if (!registering) return auth.login(email, password);
  return auth.register(email, password, form.elements.display_name.value.trim() || email.split("@")[0]);
}

async function enter() {
  hide($("signin"));
  show($("app"));
  $("me-name").textContent = auth.user.display_name;
  document.body.dataset.user = auth.user.id;
  socket.start();
  await loadRooms();
  renderAll();
}

function signOut(reason) {
  socket.stop();
  rooms.clear();
  pending.clear();
  active = null;
  hide($("app"));
  show($("signin"));
  if (reason) $("auth-error").textContent = reason;
}

function wire() {
  $("tab-login").addEventListener("click", () => setMode(false));
  $("tab-register").addEventListener("click", () => setMode(true));
  wireSignIn($("auth-form"), $("auth-submit"), $("auth-error"), signIn, enter);
  $("sign-out").addEventListener("click", async () => {
    signOut("");
    await auth.logout();
  });
  $("create-room").addEventListener("submit", createRoom);
  $("browse").addEventListener("toggle", () => $("browse").open && browsePublic().catch(showError));
  $("leave-room").addEventListener("click", leaveRoom);
  $("older").addEventListener("click", async () => {
    const room = rooms.get(active);
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    await loadOlder(room).catch(showError);
    renderMessages();
    box.scrollTop = box.scrollHeight - fromBottom;
  });
  const text = $("text");
  text.addEventListener("input", onComposerInput);
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", submitMessage);
  $("show-rooms").addEventListener("click", () => document.body.classList.toggle("show-rooms"));
  $("show-people").addEventListener("click", () => document.body.classList.toggle("show-people"));
  document.addEventListener("visibilitychange", () => {
    const room = rooms.get(active);
    if (room && document.visibilityState === "visible") {
      markRead(room);
      renderRooms();
    }
  });
  setInterval(renderTyping, 1000);
}

wire();
auth.restore().then((back) => (back ? enter() : show($("signin")))).catch(showError);
