// The server's clock and how values are shown.

// Elapsed times and ETAs are computed on the server's clock, never the
// browser's: every payload carries the server's time `_now`, and we keep the
// difference to Date.now() from the latest one.
let clockOffset = 0;

export function syncClock(payload) {
  if (payload && typeof payload._now === "number") clockOffset = payload._now - Date.now();
  if (payload && typeof payload._stall_after_ms === "number") stallAfterMs = payload._stall_after_ms;
}

// The server's --stall-after (from the feed's snapshot): a node whose changes
// stop is marked stalled as time passes, without waiting for a message.
let stallAfterMs = 0;
const RESTING = new Set(["waiting", "paused", "finished", "failed", "canceled"]);

/** Whether *node* is stalled now: the server said so, or nothing changed for --stall-after (docs/api.md). */
export function isStalled(node, now = serverNow()) {
  if (!node) return false;
  if (node._stalled) return true;
  if (!stallAfterMs || typeof node.run_time !== "number" || typeof node.end_time === "number") return false;
  if (typeof node.progress === "number" && node.progress >= 1) return false;
  if (typeof node.status === "string" && RESTING.has(node.status)) return false;
  return now - node.update_time > stallAfterMs;
}

export function serverNow() {
  return Date.now() + clockOffset;
}

/** Statuses the UI knows a colour for; any other string gets a neutral one. */
const KNOWN_STATUSES = new Set(["waiting", "running", "finished", "failed", "canceled", "paused"]);

/** The CSS class of a status: only ever one of ours, whatever string a producer sent. */
export function statusClass(status) {
  return KNOWN_STATUSES.has(status) ? `st-${status}` : "st-other";
}

/** Progress 0..1 as a percentage with one decimal, rounded down (99.99% is not "100%"). */
export function percent(progress) {
  return Math.floor(progress * 1000 + 1e-6) / 10;
}

/** A node without progress counts as 0 in its parent, so it shows as 0% too. */
export function formatPercent(progress) {
  return `${typeof progress === "number" ? percent(progress) : 0}%`;
}

/** A duration in ms as "45s", "3m 05s", "2h 07m" or "3d 4h". */
export function formatDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

/**
 * "elapsed 1m 05s · ETA 2m 10s", "took 3m 00s", "not started", or "" for a
 * node without times.  Durations count from run_time, when the node first
 * ran (left waiting), not from its first update: a step announced long
 * before it starts has not been running all that while.
 */
export function formatTimes(node, now = serverNow()) {
  if (typeof node.start_time !== "number") return "";
  const ran = typeof node.run_time === "number" ? node.run_time : null;
  if (typeof node.end_time === "number") return `took ${formatDuration(node.end_time - (ran ?? node.start_time))}`;
  if (ran === null) return "not started";            // waiting: no clock runs yet
  const parts = [`elapsed ${formatDuration(now - ran)}`];
  if (typeof node.eta === "number" && !isStalled(node, now)) {   // a stalled node's eta says little
    const left = node.eta - now;                     // the server keeps a late node's eta ahead of now
    parts.push(left > 0 ? `ETA ${formatDuration(left)}` : "ETA due");
  }
  return parts.join(" · ");
}

/** The order status chips come in, whatever the order of a node's counts:
 *  active first, then problems, then done; other statuses by name; "none" last. */
const STATUS_ORDER = ["running", "waiting", "paused", "failed", "canceled", "finished"];

export function sortedCounts(counts) {
  const rank = (status) => {
    if (status === "none") return [2, ""];
    const known = STATUS_ORDER.indexOf(status);
    return known >= 0 ? [0, String(known)] : [1, status];
  };
  return Object.entries(counts || {}).sort(([a], [b]) => {
    const [ra, sa] = rank(a);
    const [rb, sb] = rank(b);
    return ra - rb || (sa < sb ? -1 : sa > sb ? 1 : 0);
  });
}

export function lastSegment(key) {
  return key.slice(key.lastIndexOf(".") + 1);
}

/** What a node is called: its `name` when it has one, else the last segment of its key. */
export function nodeLabel(node) {
  if (typeof node.name === "string" && node.name) return node.name;
  return lastSegment(node.key);
}

/** Fields with a place of their own in a row; the rest are listed as the producer's fields. */
const OWN_PLACE = new Set(["key", "name", "msg", "status", "progress", "ts", "tasks", "namespace",
                           "start_time", "update_time", "end_time", "eta", "run_time"]);

/** [name, text] of every field a producer sent beyond the usual ones (weight included). */
export function extraFields(node) {
  return Object.entries(node)
    .filter(([name]) => !OWN_PLACE.has(name) && !name.startsWith("_"))
    .map(([name, value]) => [name, typeof value === "string" ? value : JSON.stringify(value)]);
}

/** How many children a parent has, from its status counts (null for a leaf). */
export function childCount(node) {
  if (node._status_counts) return Object.values(node._status_counts).reduce((a, b) => a + b, 0);
  if (typeof node._children_total === "number") return node._children_total;
  return null;
}

/** Is *node* an older state than *current* (a REST answer overtaken by a live update)? */
export function olderThan(node, current) {
  return typeof node.update_time === "number" && typeof current.update_time === "number"
    && node.update_time < current.update_time;
}
