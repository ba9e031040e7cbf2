// Progress history drawn: a sparkline on each row of a tree, a chart for the
// page's own node.  A history is what the service samples (docs/api.md,
// "Progress history"): sample j is the progress at start_time + j × step_ms;
// the node's current state (kept live by the feed) is the point after them.

import { api } from "./api.js";
import { formatDuration, formatPercent, serverNow } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  return element;
}

/**
 * [[time ms, progress]]: the history's samples (those without progress left
 * out), then the states the page saw since (*trail*, from the live feed), then
 * the node's current point.
 */
export function historyPoints(history, node, trail = []) {
  const pts = [];
  if (history && typeof node.start_time === "number") {
    history.samples.forEach((p, j) => {
      if (typeof p === "number") pts.push([node.start_time + j * history.step_ms, p]);
    });
  }
  const current = typeof node.update_time === "number" && typeof node.progress === "number"
    ? [[node.update_time, node.progress]] : [];
  for (const point of [...trail, ...current]) {
    if (!pts.length || point[0] > pts[pts.length - 1][0]) pts.push(point);
  }
  return pts;
}

/** The points as an SVG polyline's "x,y ..." in a width × height box spanning times t0..t1. */
function polyline(pts, t0, t1, width, height) {
  const span = Math.max(1, t1 - t0);
  return pts.map(([t, p]) => `${(((t - t0) / span) * width).toFixed(1)},${((1 - p) * height).toFixed(1)}`)
    .join(" ");
}

/** Progress per second as "%" per the unit that keeps it readable: "12.5% an hour". */
export function formatRate(perSecond) {
  for (const [seconds, unit] of [[86400, "a day"], [3600, "an hour"], [60, "a minute"]]) {
    if (perSecond * seconds <= 1) return `${formatPercent(perSecond * seconds)} ${unit}`;
  }
  return `${formatPercent(perSecond)} a second`;
}

function inTime(left) {
  return left > 0 ? `in ${formatDuration(left)}` : "now";
}

/** A row's sparkline: progress over the node's life, left to right. */
export class Sparkline {
  constructor() {
    this.element = svg("svg", { class: "spark", viewBox: "0 0 80 20", width: 80, height: 20,
                                preserveAspectRatio: "none", role: "img" });
    this.line = svg("polyline", { class: "spark-line" });
    this.element.append(this.line);
  }

  render(history, node, trail) {
    const pts = historyPoints(history, node, trail);
    // A node still under way holds its progress until now: a stall shows as a flat tail.
    const now = serverNow();
    const last = pts[pts.length - 1];
    if (last && node.end_time === undefined && last[1] < 1 && now > last[0]) pts.push([now, last[1]]);
    this.element.dataset.points = String(pts.length);
    this.element.classList.toggle("empty", pts.length < 2);
    if (pts.length < 2) {
      this.line.setAttribute("points", "");
      this.element.setAttribute("aria-label", "no progress history yet");
      return;
    }
    this.line.setAttribute("points", polyline(pts, pts[0][0], pts[pts.length - 1][0], 80, 20));
    const span = formatDuration(pts[pts.length - 1][0] - pts[0][0]);
    this.element.setAttribute("aria-label",
      `progress history over ${span}: ${formatPercent(pts[0][1])} to ${formatPercent(pts[pts.length - 1][1])}`);
  }
}

/** The chart of the page's node: its history, the trend line to 100 %, and what both ETAs say. */
export class HistoryChart {
  constructor(key) {
    this.key = key;
    this.body = null;     // the last GET /status/<key>/history
    this.element = document.createElement("figure");
    this.element.className = "history";
    this.element.hidden = true;
    this.plot = svg("svg", { class: "history-plot", viewBox: "0 0 600 120", preserveAspectRatio: "none",
                             role: "img" });
    for (const y of [0, 60, 120]) this.plot.append(svg("line", { class: "grid", x1: 0, x2: 600, y1: y, y2: y }));
    this.trendLine = svg("polyline", { class: "trend-line" });
    this.line = svg("polyline", { class: "history-line" });
    this.plot.append(this.trendLine, this.line);
    this.caption = document.createElement("figcaption");
    this.element.append(this.plot, this.caption);
  }

  /** Read the node's history again (quietly: the row shows problems with the node itself). */
  async refresh() {
    try {
      this.body = await api(`/status/${encodeURIComponent(this.key)}/history`);
    } catch {
      return;
    }
    this.draw();
  }

  /** The node's live state moved: its current point follows. */
  live(node) {
    if (!this.body || typeof node.update_time !== "number") return;
    const pts = this.body.points;
    if (pts.length && pts[pts.length - 1][0] === this.body.update_time) pts.pop();
    if (typeof node.progress === "number") pts.push([node.update_time, node.progress]);
    Object.assign(this.body, { update_time: node.update_time, progress: node.progress, eta: node.eta });
    this.draw();
  }

  draw() {
    const body = this.body;
    const pts = body.points.filter(([, p]) => typeof p === "number");
    this.element.hidden = pts.length < 2;
    if (pts.length < 2) return;
    const t0 = body.start_time;
    const last = pts[pts.length - 1];
    // The trend line runs on to 100 % when that is within the node's age again; else to the right edge.
    let t1 = last[0];
    const trend = [];
    if (last[1] < 1 && typeof body.trend_rate === "number" && body.trend_rate > 0) {
      const done = last[0] + (1 - last[1]) / (body.trend_rate / 1000);
      t1 = Math.max(last[0] + 1, Math.min(done, last[0] + (last[0] - t0)));
      trend.push([last[0], last[1]], [t1, Math.min(1, last[1] + (body.trend_rate / 1000) * (t1 - last[0]))]);
    }
    this.line.setAttribute("points", polyline(pts, t0, t1, 600, 120));
    this.trendLine.setAttribute("points", trend.length ? polyline(trend, t0, t1, 600, 120) : "");
    this.plot.setAttribute("aria-label", `progress of ${body.key} since ${new Date(t0).toLocaleString()}`);
    this.caption.textContent = this.describe(body, pts);
  }

  describe(body, pts) {
    const now = serverNow();
    const step = body.step_ms < 1000 ? `${body.step_ms} ms` : formatDuration(body.step_ms);
    const parts = [`Progress history: ${formatPercent(pts[0][1])} → ${formatPercent(pts[pts.length - 1][1])} over `
      + `${formatDuration(pts[pts.length - 1][0] - body.start_time)}, a sample every ${step}`];
    if (typeof body.trend_rate === "number" && body.trend_rate > 0) {
      parts.push(`trend ${formatRate(body.trend_rate)}`);
      if (typeof body.trend_eta === "number") parts.push(`done by the trend ${inTime(body.trend_eta - now)}`);
    }
    if (typeof body.eta === "number") parts.push(`by the recent rate ${inTime(body.eta - now)}`);
    return parts.join(" · ");
  }
}
