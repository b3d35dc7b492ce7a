// papo's browser connection: sign-in over REST and one WebSocket that survives drops.
//
// The access token lives only in memory. The refresh token is kept in sessionStorage:
// it survives a reload of this tab but is not shared with other tabs, because refresh
// tokens are single-use and two tabs refreshing one token would look like theft to
// papo (which then revokes the whole login). The page's Content-Security-Policy
// forbids inline and foreign scripts, which is what keeps that storage private.

const REFRESH_KEY = "papo.refresh";
const REFRESH_AT = 0.75; // refresh the access token at 75% of its lifetime
const PING_EVERY_MS = 15000;
const PING_DEADLINE_MS = 8000;
const NO_RECONNECT = new Set([1000, 4003]);

export class PapoError extends Error {
  constructor(code, message, field = null, status = 0) {
    super(message);
    this.code = code;
    this.field = field;
    this.status = status;
  }
}

// What a person should read for each of papo's stable error codes; the server's own
// message is used for the rest, and for validation errors it names the field.
const FRIENDLY = {
  invalid_credentials: "Wrong email or password.",
  email_taken: "An account with this email already exists: sign in instead.",
  account_disabled: "This account is disabled.",
  rate_limited: "Too many attempts. Wait a moment and try again.",
  not_a_member: "You are not a member of this room.",
  too_many_rooms: "You are in too many rooms at once: leave one first.",
  message_too_long: "That message is too long.",
  forbidden: "Your account is not allowed to do that.",
  unavailable: "papo is busy or restarting; trying again…",
  refresh_token_reused: "Your session was ended for safety. Please sign in again.",
  refresh_token_invalid: "Your session has ended. Please sign in again.",
};

export function describeError(error) {
  if (!(error instanceof PapoError)) return String(error && error.message ? error.message : error);
  if (error.code === "validation_failed" && error.field) return `${error.field}: ${error.message}`;
  return FRIENDLY[error.code] || error.message;
}

async function api(path, { method = "POST", body, token } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
    });
  } catch {
    throw new PapoError("network", "papo cannot be reached. Check your connection.");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new PapoError(error.code || "http_" + response.status, error.message || response.statusText, error.field || null, response.status);
  }
  return data;
}

export class Auth {
  constructor() {
    this.access = null;
    this.user = null;
    this.expiresAt = 0;
    this.onChange = () => {};
    this._timer = null;
    this._refreshing = null;
  }

  get signedIn() {
    return this.access !== null;
  }

  async register(email, password, displayName) {
    await api("/api/auth/register", { body: { email, password, display_name: displayName } });
    return this.login(email, password);
  }

  async login(email, password) {
    this._store(await api("/api/auth/login", { body: { email, password } }));
  }

  // Sign back in after a reload of this tab, if it still holds a refresh token.
  async restore() {
    if (!sessionStorage.getItem(REFRESH_KEY)) return false;
    try {
      await this.refresh();
      return true;
    } catch {
      this._clear();
      return false;
    }
  }

  // One refresh at a time: refresh tokens work once, so a second concurrent refresh
  // with the same token would end the login.
  refresh() {
    if (!this._refreshing) {
      const token = sessionStorage.getItem(REFRESH_KEY);
      this._refreshing = (async () => {
        if (!token) throw new PapoError("refresh_token_invalid", "no session");
        try {
          this._store(await api("/api/auth/refresh", { body: { refresh_token: token } }));
        } catch (error) {
          if (error.status >= 400 && error.status < 500) this._clear();
          throw error;
        }
      })().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  async token() {
    if (this.access && Date.now() < this.expiresAt - 5000) return this.access;
    await this.refresh();
    return this.access;
  }

  async logout() {
    const token = sessionStorage.getItem(REFRESH_KEY);
    this._clear();
    if (token) await api("/api/auth/logout", { body: { refresh_token: token } }).catch(() => null);
  }

  _store(pair) {
    this.access = pair.access_token;
    this.user = pair.user;
    this.expiresAt = Date.now() + pair.expires_in * 1000;
    sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
    this._schedule(Math.max(2000, pair.expires_in * 1000 * REFRESH_AT));
    this.onChange("refreshed");
  }

  // Refresh ahead of expiry; while papo cannot be reached, keep trying every 2 s.
  _schedule(delay) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this.refresh().catch((error) => {
        if (error.code === "network" || error.status >= 500) this._schedule(2000);
      });
    }, delay);
  }

  _clear() {
    clearTimeout(this._timer);
    this.access = null;
    this.user = null;
    sessionStorage.removeItem(REFRESH_KEY);
    this.onChange("signed-out");
  }
}

// One WebSocket to papo. Requests get promises; events go to `onEvent`. After a drop it
// reconnects with backoff and sends `resume` with the last sequence seen per joined room,
// so the page gets exactly the messages it missed, then live ones. Messages are
// de-duplicated by sequence here, so the page never shows one twice.
export class Socket {
  constructor(auth, { onEvent = () => {}, onStatus = () => {}, onResumed = () => {} } = {}) {
    this.auth = auth;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onResumed = onResumed;
    this.joined = new Set();
    this.lastSeq = new Map();
    this.status = "connecting";
    this.reconnects = 0;
    this.welcome = null;
    this._ws = null;
    this._ids = 0;
    this._pending = new Map();
    this._waiters = [];
    this._attempt = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._stopped = false;
    this._connectedOnce = false;
    window.addEventListener("offline", () => this._lost("offline"));
    window.addEventListener("online", () => this._reconnectNow());
    auth.onChange = (what) => {
      if (what === "refreshed" && this.status === "online") {
        this._send({ type: "auth.refresh", id: this._nextId(), token: auth.access });
      }
    };
  }

  start() {
    this._stopped = false;
    this._connectedOnce = false;
    this.joined.clear();
    this.lastSeq.clear();
    this._open();
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    clearInterval(this._pingTimer);
    if (this._ws) this._ws.close(1000);
    this._setStatus("closed");
  }

  _setStatus(status, detail = "") {
    this.status = status;
    this.onStatus(status, detail);
  }

  async _open() {
    clearTimeout(this._retryTimer);
    if (this._stopped) return;
    if (!navigator.onLine) {
      this._setStatus("offline");
      return; // the "online" event brings us back
    }
    this._setStatus(this._connectedOnce ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this.auth.token();
    } catch (error) {
      if (error.code === "network") return this._retry();
      this._setStatus("signed-out", describeError(error));
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this._ws = ws;
    // The token goes in the first frame, not the URL, so it stays out of access logs.
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
    ws.onmessage = (event) => this._receive(ws, JSON.parse(event.data));
    ws.onclose = (event) => this._closed(ws, event.code, event.reason);
  }

  _receive(ws, frame) {
    if (ws !== this._ws) return;
    if (frame.type === "welcome") return this._welcomed(frame);
    if (frame.type === "ok" || frame.type === "error") {
      const pending = this._pending.get(frame.id);
      if (!pending) {
        if (frame.type === "error" && frame.id == null) this.onEvent({ type: "server.error", error: new PapoError(frame.code, frame.message, frame.field) });
        return;
      }
      this._pending.delete(frame.id);
      if (frame.type === "ok") pending.resolve(frame.data);
      else pending.reject(new PapoError(frame.code, frame.message, frame.field || null));
      return;
    }
    if (frame.type === "message") {
      const seen = this.lastSeq.get(frame.room) || 0;
      if (frame.seq <= seen) return; // already shown: never show a message twice
      this.lastSeq.set(frame.room, frame.seq);
    } else if (frame.type === "resume.reset") {
      this.lastSeq.set(frame.room, frame.last_seq);
    } else if (frame.type === "room.left") {
      this.joined.delete(frame.room); // left here or on another device: do not resume it
    } else if (frame.type === "token.expiring") {
      this.auth.refresh().catch(() => null);
    }
    this.onEvent(frame);
  }

  async _welcomed(frame) {
    this.welcome = frame;
    const again = this._connectedOnce;
    this._connectedOnce = true;
    this._attempt = 0;
    this._setStatus("online");
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => this._heartbeat(), PING_EVERY_MS);
    const waiters = this._waiters.splice(0);
    waiters.forEach((wake) => wake());
    if (again) {
      this.reconnects += 1;
      const rooms = {};
      for (const room of this.joined) rooms[room] = this.lastSeq.get(room) || 0;
      let report = { rooms: {} };
      if (this.joined.size) {
        try {
          report = await this.request("resume", { rooms });
        } catch (error) {
          this.onEvent({ type: "server.error", error });
        }
      }
      this.onResumed(report);
    }
  }

  async _heartbeat() {
    if (this.status !== "online") return;
    const ws = this._ws;
    const deadline = setTimeout(() => {
      if (ws === this._ws) ws.close(4000, "no heartbeat reply");
    }, PING_DEADLINE_MS);
    try {
      await this.request("ping", {});
    } catch {
      /* the close handler deals with it */
    } finally {
      clearTimeout(deadline);
    }
  }

  _closed(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearInterval(this._pingTimer);
    this._failPending();
    if (this._stopped) return;
    if (NO_RECONNECT.has(code)) {
      this._setStatus("signed-out", reason || "The server ended this session.");
      return;
    }
    if (code === 4001) this.auth.refresh().catch(() => null); // expired: a fresh token first
    this._retry();
  }

  // The browser says the network is gone: a socket on a dead network can linger for
  // minutes, so drop it now and come back when the browser is online again.
  _lost(status) {
    const ws = this._ws;
    this._ws = null;
    clearInterval(this._pingTimer);
    this._failPending();
    if (ws) ws.close(4000, status);
    if (!this._stopped) this._setStatus(status);
  }

  _retry() {
    this._setStatus(navigator.onLine ? "reconnecting" : "offline");
    const delay = Math.min(5000, 250 * 2 ** this._attempt) * (0.5 + Math.random());
    this._attempt += 1;
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  _reconnectNow() {
    if (this._stopped || this._ws) return;
    this._attempt = 0;
    this._open();
  }

  _failPending() {
    for (const pending of this._pending.values()) pending.reject(new PapoError("connection_lost", "The connection dropped."));
    this._pending.clear();
  }

  _nextId() {
    this._ids += 1;
    return this._ids;
  }

  _send(frame) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(frame));
  }

  _online() {
    if (this.status === "online") return Promise.resolve();
    return new Promise((resolve) => this._waiters.push(resolve));
  }

  // Send one frame and wait for its reply's data; errors reject with PapoError.
  async request(type, fields = {}) {
    if (type !== "resume") await this._online();
    const id = this._nextId();
    const reply = new Promise((resolve, reject) => this._pending.set(id, { resolve, reject }));
    this._send({ type, id, ...fields });
    const data = await reply;
    if (type === "room.join") {
      const room = data.room.id;
      this.joined.add(room);
      const newest = data.history.reduce((top, m) => Math.max(top, m.seq), 0);
      this.lastSeq.set(room, Math.max(this.lastSeq.get(room) || 0, newest));
    } else if (type === "room.leave") {
      this.joined.delete(fields.room);
    }
    return data;
  }

  // Send a message until papo acknowledges it. The client id stays the same across
  // retries, so a send that was stored before the connection dropped is not stored twice.
  async sendMessage(room, text, clientId = crypto.randomUUID()) {
    for (;;) {
      try {
        return await this.request("message.send", { room, text, client_id: clientId });
      } catch (error) {
        if (error.code === "connection_lost") continue; // resent after reconnecting
        if (error.code === "unavailable") {
          await new Promise((resolve) => setTimeout(resolve, 500));
          continue;
        }
        throw error;
      }
    }
  }
}
