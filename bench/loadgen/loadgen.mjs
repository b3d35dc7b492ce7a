// papo's load generator: one Node process (pinned to its own core by bench/run.py)
// that speaks papo's protocol, a minimal JSON room protocol (ceiling, Channels) and
// socket.io, and runs the scenarios S1-S5. Prints one JSON result line on stdout.
import { readFileSync } from "node:fs";
import { monitorEventLoopDelay, performance, PerformanceObserver } from "node:perf_hooks";
import WebSocket from "ws";
import { io } from "socket.io-client";

const args = JSON.parse(process.argv[2]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// How the generator itself fared while it timed a scenario: how late its event loop ran
// a 1 ms timer (99th percentile), how long its thread was ready to run while something
// else held its core (the kernel's run delay, /proc/self/schedstat), and how long its
// own garbage collector stopped it (V8's pauses: total, longest, how many, how many
// were full mark-compacts; each pause's span goes into `gcSpans`). Each one lands in
// every latency it measures, so the tables show them beside the server's.
function watchSelf(gcSpans = []) {
  const runDelay = () => {
    try { return Number(readFileSync("/proc/self/schedstat", "utf8").split(" ")[1]); } catch { return NaN; }
  };
  const late = monitorEventLoopDelay({ resolution: 1 });
  const waitedBefore = runDelay();
  const pauses = [];
  const major = [];  // mark-compact pauses (V8's gc kind 2), the long ones
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      pauses.push(e.duration); gcSpans.push([e.startTime, e.startTime + e.duration]);
      if (e.detail?.kind === 2) major.push(e.duration);
    }
  });
  gc.observe({ entryTypes: ["gc"] });
  late.enable();
  return () => {
    late.disable();
    gc.disconnect();
    const waited = (runDelay() - waitedBefore) / 1e6;
    return {
      loadgen_late_p99_ms: +Math.max(0, late.percentile(99) / 1e6 - 1).toFixed(2),
      loadgen_gc_ms: Math.round(pauses.reduce((a, b) => a + b, 0)),
      loadgen_gc_max_ms: +Math.max(0, ...pauses).toFixed(2),
      loadgen_gc_pauses: pauses.length,
      loadgen_gc_major: major.length,
      loadgen_gc_major_ms: Math.round(major.reduce((a, b) => a + b, 0)),
      ...(Number.isNaN(waited) ? {} : { loadgen_waited_ms: Math.round(waited) }),
    };
  };
}

// --- protocol adapters -----------------------------------------------------------------

class BenchClient {  // {"op": "join"} / {"op": "pub"}; messages arrive as bare strings
  constructor(url) { this.url = url; this.onMessage = () => {}; }
  open() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.url, { perMessageDeflate: false, skipUTF8Validation: true });
      this.ws.on("open", resolve);
      this.ws.on("error", reject);
      this.ws.on("message", (raw) => {
        const at = performance.now();
        if (raw[0] === 0x7b && raw[2] === 0x6f && raw[3] === 0x70) {  // {"op": control frame
          if (this.joined) { this.joined(); this.joined = null; }
          return;
        }
        if (this.countOnly) { this.onMessage(0, 0, at); return; }
        this.onMessage(sentAtOf(raw, 0, raw.length), 0, at);
      });
    });
  }
  join(room) { return new Promise((r) => { this.joined = r; this.ws.send(JSON.stringify({ op: "join", room })); }); }
  publish(room, data) { this.ws.send(JSON.stringify({ op: "pub", room, data })); }
  close() { this.ws.terminate(); }
}

class SioClient {
  constructor(url) { this.url = url; this.onMessage = () => {}; }
  open() {
    return new Promise((resolve, reject) => {
      this.socket = io(this.url, { transports: ["websocket"], reconnection: false, forceNew: true });
      this.socket.on("connect", resolve);
      this.socket.on("connect_error", reject);
      this.socket.on("msg", (data) => {
        const at = performance.now();
        this.onMessage(sentAtOfText(data), 0, at);
      });
    });
  }
  join(room) { return this.socket.timeout(30000).emitWithAck("join", room); }
  publish(room, data) { this.socket.emit("pub", { room, data }); }
  close() { this.socket.disconnect(); }
}

// Every adapter hands a delivery on as (send time, sequence number, receipt time). The
// receipt time is taken first, before any of the adapter's own parsing; the send time
// is read from the text ("<anything>|<performance.now() at the send>") straight from the
// received bytes, for every protocol alike (no string of the frame or of its text).

// The send time at the end of a decoded text (socket.io's, or a papo text with escapes).
const sentAtOfText = (text) => Number(text.slice(text.lastIndexOf("|") + 1));

// The send time at the end of the text in raw[start, end): the digits after the last "|".
function sentAtOf(raw, start, end) {
  let bar = end - 1;
  while (bar >= start && raw[bar] !== 0x7c) bar--;
  let whole = 0; let i = bar + 1;
  for (; i < end && raw[i] >= 0x30 && raw[i] <= 0x39; i++) whole = whole * 10 + raw[i] - 0x30;
  if (i === end) return whole;
  if (raw[i] !== 0x2e) return Number(raw.latin1Slice(bar + 1, end));
  let fraction = 0; let scale = 1;
  for (i += 1; i < end && raw[i] >= 0x30 && raw[i] <= 0x39; i++) { fraction = fraction * 10 + raw[i] - 0x30; scale *= 10; }
  return i === end ? whole + fraction / scale : Number(raw.latin1Slice(bar + 1, end));
}

// A papo message frame starts {"type":"message","room":"<room>","seq":<n>, (msgspec keeps
// the contract's field order); its text is found by one search. The generator needs the
// room (for its last sequence number there), the number and the send time; the room's
// string is made once per client and room, not per delivery. Anything else, or a text
// with escapes, takes JSON.parse.
const HEAD = Buffer.from('{"type":"message","room":"'); const SEQ = Buffer.from('","seq":');
const TEXT = Buffer.from('"text":"');
function bytesAt(raw, at, bytes) {
  if (raw.length < at + bytes.length) return false;
  for (let k = 0; k < bytes.length; k++) if (raw[at + k] !== bytes[k]) return false;
  return true;
}
function messageFields(raw, client) {
  if (!bytesAt(raw, 0, HEAD)) return null;
  const r = HEAD.length; let rEnd = r;
  while (rEnd < raw.length && raw[rEnd] !== 0x22) rEnd++;
  if (!bytesAt(raw, rEnd, SEQ)) return null;
  let seq = 0; let i = rEnd + SEQ.length;
  for (; raw[i] >= 0x30 && raw[i] <= 0x39; i++) seq = seq * 10 + raw[i] - 0x30;
  const t = raw.indexOf(TEXT, i); if (t < 0) return null;
  let tEnd = t + TEXT.length;
  for (; tEnd < raw.length && raw[tEnd] !== 0x22; tEnd++) if (raw[tEnd] === 0x5c) return null;
  const known = client.roomBytes;
  let same = known !== null && known.length === rEnd - r;
  for (let k = 0; same && k < known.length; k++) same = known[k] === raw[r + k];
  if (!same) { client.roomBytes = Buffer.from(raw.subarray(r, rEnd)); client.room = raw.latin1Slice(r, rEnd); }
  return { room: client.room, seq, sentAt: sentAtOf(raw, t + TEXT.length, tEnd) };
}

class PapoClient {
  constructor(url, token) {
    this.url = `${url}?token=${token}`; this.onMessage = () => {}; this.pending = new Map();
    this.nextId = 1; this.lastSeq = new Map(); this.duplicates = 0;
    this.roomBytes = null; this.room = "";
  }
  open() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.url, { perMessageDeflate: false, skipUTF8Validation: true });
      this.ws.on("error", (e) => { if (!this.welcomed) reject(e); });
      this.ws.on("close", () => { for (const p of this.pending.values()) p.reject(new Error("closed")); this.pending.clear(); });
      this.ws.on("message", (raw) => {
        const at = performance.now();
        // {"type":"message" -- counted without decoding when only throughput matters
        const isMessage = raw[9] === 0x6d && raw[16] === 0x22;
        if (this.countOnly && isMessage) { this.onMessage(0, 0, at); return; }
        const fields = isMessage ? messageFields(raw, this) : null;
        const frame = fields || JSON.parse(raw.toString());
        if (fields || frame.type === "message") {
          const last = this.lastSeq.get(frame.room) || 0;
          if (frame.seq <= last) { this.duplicates += 1; return; }
          this.lastSeq.set(frame.room, frame.seq);
          this.onMessage(fields ? fields.sentAt : sentAtOfText(frame.text), frame.seq, at);
        } else if (frame.type === "ok" || frame.type === "error") {
          const p = this.pending.get(frame.id); if (!p) return; this.pending.delete(frame.id);
          if (frame.type === "ok") p.resolve(frame.data); else p.reject(new Error(frame.code));
        } else if (frame.type === "welcome") { this.welcomed = true; resolve(); }
      });
    });
  }
  request(type, fields) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ type, id, ...fields }));
    });
  }
  async join(room) { return this.request("room.join", { room, history: 0 }); }
  publish(room, data) {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ type: "message.send", id, room, text: data, client_id: `c${id}-${Math.random()}` }));
  }
  close() { this.ws.terminate(); }
}

// Counting without ws's per-message work: after the handshake and join, read the raw
// socket and count server text frames by their headers only (server frames are
// unmasked). Used by S1, where the generator must out-run the fastest server.
function countFrames(ws, onFrame) {
  const socket = ws._socket;
  socket.removeAllListeners("data");
  let pending = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    let buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let offset = 0;
    while (buf.length - offset >= 2) {
      const opcode = buf[offset] & 0x0f; let len = buf[offset + 1] & 0x7f; let head = 2;
      if (len === 126) { if (buf.length - offset < 4) break; len = buf.readUInt16BE(offset + 2); head = 4; }
      else if (len === 127) { if (buf.length - offset < 10) break; len = Number(buf.readBigUInt64BE(offset + 2)); head = 10; }
      if (buf.length - offset < head + len) break;
      if (opcode === 1) onFrame();
      offset += head + len;
    }
    pending = offset < buf.length ? buf.subarray(offset) : Buffer.alloc(0);
  });
}

function makeClient() {
  if (args.protocol === "papo") return new PapoClient(args.url, args.token);
  if (args.protocol === "sio") return new SioClient(args.url);
  return new BenchClient(args.url);
}

async function openMany(count, concurrency = 50) {
  const clients = new Array(count);
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      const c = makeClient();
      await c.open();
      clients[i] = c;
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return clients;
}

async function roomIds(names) {  // papo rooms must be created; the others use names
  if (args.protocol !== "papo") return names;
  const admin = makeClient(); await admin.open();
  const ids = [];
  for (const name of names) ids.push((await admin.request("room.create", { name })).id);
  admin.close();
  return ids;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function cpuMeter() {
  const start = process.cpuUsage(); const t0 = performance.now();
  return () => { const u = process.cpuUsage(start); return ((u.user + u.system) / 1000) / (performance.now() - t0) * 100; };
}

// Publish-to-receive times of one scenario. Send and receipt times go into arrays
// allocated once, so recording a delivery makes no garbage for the generator's own
// collector, whose pauses would land in the latencies it measures. Deliveries whose
// flight overlapped one of those pauses are left out of `p99_clear_of_gc_ms`, which
// shows how much of a row's tail the generator itself put there. Per message (its
// deliveries share one send time), the time until its first and its last recipient
// had it: with 1000 recipients, the last is when a fan-out was through.
function latencyRecorder(capacity, gcSpans) {
  const sentAt = new Float64Array(capacity); const receivedAt = new Float64Array(capacity);
  let count = 0;
  return {
    get count() { return count; },
    record(sent, received) {
      if (count < capacity) { sentAt[count] = sent; receivedAt[count] = received; }
      count += 1;
    },
    summary(expected) {
      const n = Math.min(count, capacity);
      const latencies = new Float64Array(n); const clear = [];
      const spans = new Map();  // send time -> [first, last] receipt
      for (let i = 0; i < n; i++) {
        latencies[i] = receivedAt[i] - sentAt[i];
        if (!gcSpans.some(([from, to]) => from < receivedAt[i] && to > sentAt[i])) clear.push(latencies[i]);
        const span = spans.get(sentAt[i]);
        if (span === undefined) spans.set(sentAt[i], [receivedAt[i], receivedAt[i]]);
        else { span[0] = Math.min(span[0], receivedAt[i]); span[1] = Math.max(span[1], receivedAt[i]); }
      }
      const firsts = []; const lasts = [];
      for (const [sent, [first, last]] of spans) { firsts.push(first - sent); lasts.push(last - sent); }
      latencies.sort(); clear.sort((a, b) => a - b);
      firsts.sort((a, b) => a - b); lasts.sort((a, b) => a - b);
      const at = (sorted, p) => +(percentile(sorted, p) ?? 0).toFixed(2);
      return {
        delivered_pct: +(100 * count / expected).toFixed(2),
        p50_ms: at(latencies, 50), p90_ms: at(latencies, 90), p99_ms: at(latencies, 99),
        p999_ms: at(latencies, 99.9), max_ms: at(latencies, 100), p99_clear_of_gc_ms: at(clear, 99),
        first_recipient_p50_ms: at(firsts, 50), last_recipient_p50_ms: at(lasts, 50),
        last_recipient_p90_ms: at(lasts, 90),
      };
    },
  };
}

// --- scenarios ------------------------------------------------------------------------

async function s1() {  // fan-out throughput with a bounded publish window
  const [room] = await roomIds(["s1"]);
  const subs = await openMany(args.subscribers);
  await Promise.all(subs.map((c) => c.join(room)));
  subs.forEach((c) => { c.countOnly = true; });
  const pub = makeClient(); await pub.open();
  let received = 0; let sentinel = 0; let sent = 0; let wake = null;
  const onSentinel = () => {
    received += 1; sentinel += 1;
    if (wake && sent - sentinel < args.window) { const w = wake; wake = null; w(); }
  };
  subs.forEach((c, i) => {
    const last = i === subs.length - 1;
    if (c.ws) countFrames(c.ws, last ? onSentinel : () => { received += 1; });
    else c.onMessage = last ? onSentinel : () => { received += 1; };
  });
  const yieldNow = () => new Promise((r) => setImmediate(r));
  // Sleep (no spinning) until the sentinel subscriber has caught up, or 50 ms pass.
  const windowOpen = () => new Promise((r) => { wake = r; setTimeout(() => { if (wake === r) { wake = null; r(); } }, 50); });
  const warmupEnd = performance.now() + args.warmup * 1000;
  let meter = null; let t0 = 0; let base = 0;
  const deadline = warmupEnd + args.seconds * 1000;
  while (performance.now() < deadline) {
    if (meter === null && performance.now() >= warmupEnd) { meter = cpuMeter(); t0 = performance.now(); base = received; }
    if (sent - sentinel < args.window) {
      pub.publish(room, `${sent}|${performance.now()}`); sent += 1;
      if (sent % 8 === 0) await yieldNow();
    } else await windowOpen();
  }
  const elapsed = (performance.now() - t0) / 1000;
  const result = { deliveries_per_s: Math.round((received - base) / elapsed), published: sent, loadgen_cpu: Math.round(meter()) };
  [...subs, pub].forEach((c) => c.close());
  return result;
}

async function s2() {  // fan-out latency at a fixed publish rate
  const [room] = await roomIds(["s2"]);
  const subs = await openMany(args.subscribers);
  await Promise.all(subs.map((c) => c.join(room)));
  const pub = makeClient(); await pub.open();
  const total = args.rate * args.seconds; const interval = 1000 / args.rate;
  const gcSpans = []; const recorder = latencyRecorder(total * subs.length, gcSpans);
  subs.forEach((c) => { c.onMessage = (sent, _, received) => recorder.record(sent, received); });
  const meter = cpuMeter(); const watched = watchSelf(gcSpans);
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + i * interval; const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    pub.publish(room, `${i}|${performance.now()}`);
  }
  const self = watched();
  const deadline = performance.now() + 5000;
  while (recorder.count < total * subs.length && performance.now() < deadline) await sleep(50);
  const cpu = meter();
  [...subs, pub].forEach((c) => c.close());
  return { ...recorder.summary(total * subs.length), loadgen_cpu: Math.round(cpu), ...self };
}

async function s3() {  // idle connections: connect rate, then hold for the RSS sample
  const rooms = await roomIds(Array.from({ length: 100 }, (_, i) => `s3-${i}`));
  const started = performance.now();
  const clients = await openMany(args.connections, 100);
  await Promise.all(clients.map((c, i) => c.join(rooms[i % rooms.length])));
  const seconds = (performance.now() - started) / 1000;
  console.log(JSON.stringify({ phase: "hold", connections: clients.length }));
  await sleep(args.hold * 1000);
  clients.forEach((c) => c.close());
  return { connections: clients.length, connects_per_s: Math.round(clients.length / seconds) };
}

async function s4() {  // chat: rooms of 10, everyone talks once a second
  const roomCount = Math.ceil(args.clients / 10);
  const rooms = await roomIds(Array.from({ length: roomCount }, (_, i) => `s4-${i}`));
  const clients = await openMany(args.clients);
  await Promise.all(clients.map((c, i) => c.join(rooms[i % roomCount])));
  const gcSpans = []; let expected = 0;
  const recorder = latencyRecorder(clients.length * 10 * (args.seconds + 1), gcSpans);
  clients.forEach((c) => { c.onMessage = (sent, _, received) => recorder.record(sent, received); });
  const start = performance.now();
  const watched = watchSelf(gcSpans);
  const meter = cpuMeter();
  const timers = clients.map((c, i) => (async () => {
    await sleep((i / clients.length) * 1000);
    const room = rooms[i % roomCount]; const members = clients.filter((_, j) => j % roomCount === i % roomCount).length;
    for (let k = 0; k < args.seconds; k++) {
      c.publish(room, `${i}-${k}|${performance.now()}`); expected += members;
      await sleep(start + (k + 1) * 1000 + (i / clients.length) * 1000 - performance.now());
    }
  })());
  await Promise.all(timers);
  const self = watched();
  const cpu = meter();
  const deadline = performance.now() + 5000;
  while (recorder.count < expected && performance.now() < deadline) await sleep(50);
  clients.forEach((c) => c.close());
  return { ...recorder.summary(expected), loadgen_cpu: Math.round(cpu), ...self };
}

async function s5() {  // resume storm (papo only): everyone drops at once and resumes
  if (args.protocol !== "papo") return { skipped: "no resume protocol" };
  const [room] = await roomIds(["s5"]);
  const clients = await openMany(args.clients);
  await Promise.all(clients.map((c) => c.join(room)));
  const pub = makeClient(); await pub.open();
  let talking = true; let sent = 0;
  const talker = (async () => { while (talking) { pub.publish(room, `${sent++}|${performance.now()}`); await sleep(1000 / args.rate); } })();
  await sleep(1000);
  const firstSeq = clients.map((c) => (c.lastSeq.get(room) || 0) + 1);
  const lastSeen = clients.map((c) => c.lastSeq.get(room) || 0);
  clients.forEach((c) => c.close());  // the storm
  await sleep(200);
  const started = performance.now();
  await Promise.all(clients.map(async (c, i) => {
    c.lastSeq.set(room, lastSeen[i]);
    const seqs = new Set(); c.onMessage = (_, seq) => { if (seqs.has(seq)) c.duplicates += 1; seqs.add(seq); };
    c.seqs = seqs;
    await c.open();
    await c.request("resume", { rooms: { [room]: lastSeen[i] } });
  }));
  const storm = (performance.now() - started) / 1000;
  await sleep(1000); talking = false; await talker;
  // Wait until every client has the newest message (or 30 s): lag is not loss.
  let finalSeq = 0;
  for (let waited = 0; waited < 30000; waited += 100) {
    finalSeq = Math.max(...clients.map((c) => c.lastSeq.get(room) || 0));
    if (waited > 1500 && clients.every((c) => (c.lastSeq.get(room) || 0) === finalSeq)) break;
    await sleep(100);
  }
  let missed = 0; let duplicates = 0;
  clients.forEach((c, i) => {
    duplicates += c.duplicates;
    for (let s = lastSeen[i] + 1; s <= finalSeq; s++) if (!c.seqs.has(s)) missed += 1;
  });
  [...clients, pub].forEach((c) => c.close());
  return { resume_seconds: +storm.toFixed(2), missed, duplicated: duplicates, first_seq: Math.min(...firstSeq), final_seq: finalSeq };
}

const scenarios = { s1, s2, s3, s4, s5 };
const result = await scenarios[args.scenario]();
console.log(JSON.stringify({ phase: "result", ...result }));
process.exit(0);
