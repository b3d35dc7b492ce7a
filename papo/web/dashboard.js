// The live dashboard: every papo node sends `dashboard.stats` each interval; this page
// adds up the nodes heard from recently and charts the totals. Domains add panels with
// `registerPanel`; figures in a stats event's `panels` without a registered renderer
// get a card and a chart each.
import { Auth, Socket, describeError } from "./papo.js";
import { el, show, hide, toast, wireSignIn } from "./ui.js";

const HISTORY_POINTS = 120;
const STALE_INTERVALS = 3; // a node silent for this many intervals has left

const auth = new Auth();
const socket = new Socket(auth, { onEvent, onStatus, onResumed: subscribe });
const nodes = new Map(); // node id -> {stats, heardAt}
const series = new Map(); // card key -> {values, value node, canvas}
const panelRenderers = new Map();
let interval = 1;

const $ = (id) => document.getElementById(id);

const CARDS = [
  ["connections", "Connections"],
  ["messages_per_second", "Messages / s"],
  ["deliveries_per_second", "Deliveries / s"],
  ["rooms", "Active rooms"],
  ["nodes", "Nodes"],
  ["slow_consumer_closes", "Slow-consumer closes"],
];

export function registerPanel(name, render) {
  panelRenderers.set(name, render);
}

// --- charts ------------------------------------------------------------------------

function card(container, key, title) {
  const value = el("p", { class: "value", id: `value-${key}` }, "–");
  const canvas = el("canvas", { width: "300", height: "60", "aria-hidden": "true" });
  container.append(el("article", { class: "card", "data-key": key }, el("h3", {}, title), value, canvas));
  const entry = { values: [], value, canvas };
  series.set(key, entry);
  return entry;
}

function draw(entry) {
  const { canvas, values } = entry;
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  if (values.length < 2) return;
  const top = Math.max(1, ...values);
  context.strokeStyle = "#0b6e4f";
  context.lineWidth = 2;
  context.beginPath();
  // Newest point at the right edge; the line grows leftwards as history builds up.
  const offset = HISTORY_POINTS - values.length;
  values.forEach((v, i) => {
    const x = ((offset + i) / (HISTORY_POINTS - 1)) * width;
    const y = height - 2 - (v / top) * (height - 4);
    if (i === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
}

function record(key, title, value, container = $("cards")) {
  const entry = series.get(key) || card(container, key, title);
  entry.values.push(value);
  if (entry.values.length > HISTORY_POINTS) entry.values.shift();
  entry.value.textContent = Number.isInteger(value) ? String(value) : value.toFixed(1);
  draw(entry);
}

// --- figures -----------------------------------------------------------------------

function liveNodes() {
  const cutoff = Date.now() - STALE_INTERVALS * interval * 1000;
  for (const [id, node] of nodes) if (node.heardAt < cutoff) nodes.delete(id);
  return [...nodes.values()].map((node) => node.stats);
}

function refresh() {
  const live = liveNodes();
  const sum = (key) => live.reduce((total, stats) => total + stats[key], 0);
  for (const [key, title] of CARDS) record(key, title, key === "nodes" ? live.length : sum(key));
  const panels = new Map();
  for (const stats of live) {
    for (const [panel, figures] of Object.entries(stats.panels || {})) {
      const totals = panels.get(panel) || {};
      for (const [name, value] of Object.entries(figures)) totals[name] = (totals[name] || 0) + value;
      panels.set(panel, totals);
    }
  }
  for (const [panel, totals] of panels) {
    const render = panelRenderers.get(panel);
    if (render) render($("panels"), totals);
    else for (const [name, value] of Object.entries(totals)) record(`${panel}.${name}`, `${panel}: ${name}`, value, $("panels"));
  }
  renderNodes(live);
  $("updated").textContent = new Date().toLocaleTimeString();
}

function renderNodes(live) {
  $("node-rows").replaceChildren(
    ...live
      .sort((a, b) => a.node.localeCompare(b.node))
      .map((stats) =>
        el(
          "tr",
          { "data-node": stats.node },
          ...[stats.node, stats.connections, stats.rooms, stats.messages_per_second, stats.deliveries_per_second, stats.slow_consumer_closes, new Date(stats.ts * 1000).toLocaleTimeString()].map((cell) => el("td", {}, String(cell))),
        ),
      ),
  );
}

// --- connection --------------------------------------------------------------------

function onEvent(event) {
  if (event.type === "dashboard.stats") {
    interval = event.interval;
    const fresh = !nodes.has(event.node);
    nodes.set(event.node, { stats: event, heardAt: Date.now() });
    if (fresh) refresh();
  } else if (event.type === "server.error") {
    toast($("toast"), describeError(event.error));
  }
}

function onStatus(status, detail) {
  document.body.dataset.status = status;
  const banner = $("status");
  if (status === "reconnecting" || status === "offline") {
    banner.textContent = status === "offline" ? "You are offline." : "Reconnecting…";
    show(banner);
  } else {
    hide(banner);
  }
  if (status === "signed-out") signOut(detail);
}

async function subscribe() {
  try {
    const reply = await socket.request("dashboard.subscribe");
    interval = reply.interval;
  } catch (error) {
    if (error.code === "forbidden") {
      signOut("This account cannot view the dashboard: it needs the admin or agent role.");
      await auth.logout();
      return;
    }
    toast($("toast"), describeError(error));
  }
}

async function enter() {
  hide($("signin"));
  show($("board"));
  $("me-name").textContent = `${auth.user.display_name} (${auth.user.role})`;
  socket.start();
  await subscribe();
}

function signOut(reason) {
  socket.stop();
  hide($("board"));
  show($("signin"));
  $("auth-error").textContent = reason || "";
}

wireSignIn(
  $("auth-form"),
  $("auth-submit"),
  $("auth-error"),
  (form) => auth.login(form.elements.email.value.trim(), form.elements.password.value),
  enter,
);
$("sign-out").addEventListener("click", async () => {
  signOut("");
  await auth.logout();
});
setInterval(() => {
  if (socket.status === "online") refresh();
}, 1000);
auth.restore().then((back) => (back ? enter() : show($("signin"))));
