// The pyraft dashboard: polls every node directly, so it keeps working when the node that
// served the page dies. No framework, no build step: the DOM is updated in place.
"use strict";

const POLL_MS = 400;      // status and lag
const TIMEOUT_MS = 350;   // a node slower than this is shown as down
const TABLES_MS = 1000;   // brokers, topics, partitions
const MEMBERS_MS = 2000;  // the quorum's members (voters and learners come and go)
const MAX_EVENTS = 60;

const state = { nodes: [], status: {}, lag: {}, cursors: {}, events: [], leader: null };

async function getJSON(url, ms) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    const response = await fetch(url, { signal: abort.signal, cache: "no-store" });
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function card(node) {
  const fields = ["term", "log end", "commit", "applied"].map((name) => [
    el("dt", {}, name), el("dd", { "data-field": name }, "–"),
  ]).flat();
  const member = node.voter === false ? "observer" : "voter";
  return el("article", { class: "node", "data-node-id": node.id, "data-state": "unknown", "data-member": member },
    el("h3", {}, member === "voter" ? `node ${node.id}` : `node ${node.id} (observer)`,
      el("span", { class: "badge" }, "…")),
    el("dl", {}, ...fields),
    el("div", { class: "lag" }, el("span", { class: "lag-text" }, "lag –"),
      el("div", { class: "track" }, el("div", { class: "fill" }))));
}

async function pollNode(node, into) {
  try {
    into[node.id] = await getJSON(`${node.httpUrl}/status`, TIMEOUT_MS);
  } catch (err) {
    into[node.id] = null;
  }
}

function findLeader() {
  const leaders = Object.values(state.status).filter((s) => s && s.role === "leader");
  leaders.sort((a, b) => b.term - a.term);
  return leaders.length ? leaders[0] : null;
}

async function pollLag(leader) {
  state.lag = {};
  if (!leader) return;
  const url = state.nodes.find((n) => n.id === leader.nodeId)?.httpUrl;
  if (!url) return;
  try {
    const quorum = await getJSON(`${url}/quorum?local=true`, TIMEOUT_MS);
    for (const voter of quorum.voters) state.lag[voter.id] = voter.lag;
  } catch (err) { /* the next poll tries again */ }
}

function renderNode(node, leader) {
  const article = document.querySelector(`.node[data-node-id="${node.id}"]`);
  const status = state.status[node.id];
  const badge = article.querySelector(".badge");
  article.dataset.state = status ? "up" : "down";
  article.dataset.role = status ? status.role : "down";
  badge.className = `badge ${status ? status.role : "down"}`;
  badge.textContent = status ? status.role : "down";
  const values = status
    ? { term: status.term, "log end": status.lastLogIndex, commit: status.commitIndex, applied: status.lastApplied }
    : {};
  for (const dd of article.querySelectorAll("dd")) dd.textContent = values[dd.dataset.field] ?? "–";
  renderLag(article, state.lag[node.id], leader);
}

function renderLag(article, lag, leader) {
  const fill = article.querySelector(".fill");
  const text = article.querySelector(".lag-text");
  if (lag === undefined || lag === null) {
    text.textContent = leader ? "lag –" : "lag – (no leader)";
    fill.style.width = "0";
    return;
  }
  const scale = Math.max(10, ...Object.values(state.lag).map((v) => v || 0));
  text.textContent = `lag ${lag} entries`;
  fill.style.width = `${lag === 0 ? 100 : Math.max(4, 100 - (100 * lag) / scale)}%`;
  fill.classList.toggle("behind", lag > 0);
}

function renderLeader(leader) {
  const line = document.getElementById("leader");
  line.dataset.leaderId = leader ? leader.nodeId : "";
  line.textContent = leader ? `leader: node ${leader.nodeId} (term ${leader.term})` : "no leader";
}

async function pollEvents(node) {
  const since = state.cursors[node.id] || 0;
  try {
    const page = await getJSON(`${node.httpUrl}/events?since=${since}&limit=50`, TIMEOUT_MS);
    for (const event of page.events) state.events.push({ node: node.id, ...event });
    state.cursors[node.id] = page.lastSeq < since ? 0 : page.lastSeq; // a restarted node starts over
  } catch (err) { /* down: its status shows it */ }
}

function renderEvents() {
  state.events.sort((a, b) => b.time - a.time);
  state.events.length = Math.min(state.events.length, MAX_EVENTS);
  const list = document.getElementById("events");
  list.replaceChildren(...state.events.map((e) => el("li", {},
    el("span", { class: "from" }, `${new Date(e.time * 1000).toLocaleTimeString()} n${e.node} `),
    el("span", { class: "kind" }, e.kind), " ",
    Object.entries(e.detail).map(([k, v]) => `${k}=${v}`).join(" "))));
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, String(c ?? ""))))));
}

async function pollTables() {
  const up = state.nodes.filter((n) => state.status[n.id]);
  const leader = state.leader && up.find((n) => n.id === state.leader.nodeId);
  const source = leader || up[0];
  if (!source) return;
  const get = (path) => getJSON(`${source.httpUrl}${path}?consistency=stale`, 2 * TIMEOUT_MS);
  try {
    const [brokers, topics, partitions] = await Promise.all(
      [get("/get_broker/"), get("/get_topic/"), get("/get_partition/")]);
    fillTable("brokers", brokers.brokers.map((b) =>
      [b.brokerId, `${b.brokerHost}:${b.brokerPort}`, b.status, b.brokerEpoch]));
    fillTable("topics", topics.topics.map((t) => [t.name, t.topicId, (t.partitions || []).length]));
    fillTable("partitions", partitions.partitions.map((p) =>
      [p.topicName || p.topicId, p.partitionId, p.leader, (p.replicas || []).join(","), (p.isr || []).join(",")]));
  } catch (err) { /* next round */ }
}

async function tick() {
  // A fresh map of the members polled now: a node removed meanwhile leaves nothing behind.
  const statuses = {};
  await Promise.all(state.nodes.map((node) => pollNode(node, statuses)));
  state.status = statuses;
  state.leader = findLeader();
  await Promise.all([pollLag(state.leader), ...state.nodes.filter((n) => state.status[n.id]).map(pollEvents)]);
  for (const node of state.nodes) renderNode(node, state.leader);
  renderLeader(state.leader);
  renderEvents();
}

async function loop(step, every) {
  for (;;) {
    const started = Date.now();
    try { await step(); } catch (err) { console.error(err); } // one bad round must not end the loop
    await new Promise((r) => setTimeout(r, Math.max(0, every - (Date.now() - started))));
  }
}

// The members of the live configuration, as the leader sees them (a node removed from the
// quorum, the one that served this page say, keeps an old view); without a leader, from the
// node that served the page or any node that answers. Cards are rebuilt only on a change.
async function refreshMembers() {
  const leader = state.leader && state.nodes.find((n) => n.id === state.leader.nodeId);
  const up = state.nodes.filter((n) => state.status[n.id]).map((n) => n.httpUrl);
  const sources = new Set([...(leader ? [leader.httpUrl] : []), location.origin, ...up]);
  for (const url of sources) {
    try {
      showMembers(await getJSON(`${url}/cluster`, 2000), url);
      return true;
    } catch (err) { /* try the next node */ }
  }
  return false;
}

function showMembers(cluster, answeredBy) {
  // A member whose URL the answering node does not know is reachable only if it is that node.
  const url = (n) => n.httpUrl || (n.id === cluster.nodeId ? answeredBy : null);
  const nodes = cluster.nodes.filter(url).map((n) => ({ id: n.id, httpUrl: url(n), voter: n.voter }));
  document.getElementById("cluster-id").textContent = `cluster ${cluster.clusterId}`;
  const key = (list) => list.map((n) => `${n.id}@${n.httpUrl}:${n.voter}`).join(",");
  if (key(nodes) === key(state.nodes)) return;
  state.nodes = nodes;
  document.getElementById("nodes").replaceChildren(...nodes.map(card));
  for (const node of nodes) renderNode(node, state.leader);
}

async function start() {
  while (!(await refreshMembers())) await new Promise((r) => setTimeout(r, 500));
  loop(tick, POLL_MS);
  loop(pollTables, TABLES_MS);
  loop(refreshMembers, MEMBERS_MS);
}

start();
