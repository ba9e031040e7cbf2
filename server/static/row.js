// One node as a row: name, status, progress bar and percent, message,
// elapsed time and ETA, children's status counts, the producer's own fields.
//
// Everything a producer sent goes into the page as text (textContent or an
// attribute value), never as markup.  CSS classes come from our own lists.

import { Sparkline } from "./history.js";
import { childCount, extraFields, formatPercent, formatTimes, lastSegment, nodeLabel, percent, sortedCounts,
  isStalled, statusClass } from "./format.js";

/** A new element with a class and, optionally, text. */
export function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

/** Most states a row keeps from the live feed for its sparkline, beyond its history. */
const TRAIL = 240;

export class NodeRow {
  /**
   * @param {string} key    the node's key
   * @param {number} depth  levels below the page's root (0: the root)
   * @param {object} opts   href: make the name a link there; onToggle, onMore: callbacks
   */
  constructor(key, depth, { href = null, onToggle = null, onMore = null } = {}) {
    this.key = key;
    this.depth = depth;
    this.node = { key };
    this.expanded = false;
    this.pages = null;   // while expanded: the pages of its children (see pages.js)

    this.element = el("li", "node");
    this.element.dataset.key = key;
    const row = el("div", "row");
    this.lead = el("span", "lead");             // expand toggle, "open" link, or nothing
    const body = el("div", "body");

    const title = el("div", "title");
    this.name = el(href ? "a" : "span", "name");
    if (href) this.name.href = href;
    this.keyText = el("span", "key");
    this.status = el("span", "status");
    this.counts = el("span", "counts");
    this.stalled = el("span", "chip stalled", "stalled");
    this.stalled.hidden = true;
    title.append(this.name, this.status, this.stalled, this.counts, this.keyText);

    const meter = el("div", "meter");
    this.bar = el("div", "progress");
    this.bar.setAttribute("role", "progressbar");
    this.bar.setAttribute("aria-valuemin", "0");
    this.bar.setAttribute("aria-valuemax", "100");
    this.fill = el("div", "fill");
    this.bar.append(this.fill);
    this.percent = el("span", "percent");
    this.history = null;                        // the node's last _history read (history.js)
    this.trail = [];                            // [time, progress] of the states shown since
    this.spark = new Sparkline();
    meter.append(this.bar, this.percent, this.spark.element);

    const info = el("div", "info");
    this.msg = el("span", "msg");
    this.times = el("span", "times");
    this.fields = el("dl", "fields");
    info.append(this.msg, this.fields, this.times);

    body.append(title, meter, info);
    row.append(this.lead, body);

    this.children = el("ul", "children");
    this.children.hidden = true;
    this.more = el("button", "more");
    this.more.type = "button";
    this.more.hidden = true;
    if (onMore) this.more.addEventListener("click", () => onMore(this));
    this.onToggle = onToggle;
    this.element.append(row, this.children, this.more);
  }

  /** Show *node* (a full snapshot of it). */
  render(node) {
    this.node = node;
    const label = nodeLabel(node);
    this.name.textContent = label;
    this.name.title = node.key;
    // The whole key on a page's root or a listed tree; below, its own segment (when it has a name).
    this.keyText.textContent = this.depth === 0 ? node.key : lastSegment(node.key);
    this.keyText.hidden = label === this.keyText.textContent;

    const status = typeof node.status === "string" ? node.status : "";
    this.status.textContent = status;
    this.status.className = `status ${statusClass(status)}`;
    this.status.hidden = !status;

    this.renderCounts(node);
    this.renderBar(node, label);
    this.setHistory(node._history);
    this.msg.textContent = typeof node.msg === "string" ? node.msg : "";
    this.renderFields(node);
    this.renderTimes();
  }

  renderCounts(node) {
    const chips = [];
    if (node.namespace) {
      const total = childCount(node) || 0;
      chips.push(el("span", "chip", `${total} ${total === 1 ? "tree" : "trees"}`));
    }
    for (const [status, n] of sortedCounts(node._status_counts)) {
      if (status === "none") {                        // children without a status: no colour
        chips.push(el("span", "chip", `${n} no status`));
      } else {
        chips.push(el("span", `chip ${statusClass(status)}`, `${n} ${status}`));
      }
    }
    this.counts.replaceChildren(...chips);
  }

  renderBar(node, label) {
    const parent = childCount(node) !== null;
    this.element.classList.toggle("parent", parent);    // aggregate bar: drawn apart from a leaf's
    this.element.classList.toggle("namespace", Boolean(node.namespace));
    this.bar.setAttribute("aria-label", `${parent ? "Overall progress" : "Progress"} of ${label}`);
    if (typeof node.progress === "number") {
      const value = percent(node.progress);
      this.bar.setAttribute("aria-valuenow", String(value));
      this.bar.setAttribute("aria-valuetext", formatPercent(node.progress));
      this.fill.style.width = `${value}%`;              // CSSOM: allowed by the page's CSP
    } else {
      this.bar.setAttribute("aria-valuenow", "0");      // no progress yet: it counts as 0 in its parent
      this.bar.setAttribute("aria-valuetext", "0% (no progress reported yet)");
      this.fill.style.width = "0";
    }
    this.bar.title = parent
      ? "Overall progress: its parts' progress, weighted (striped until done)"
      : "Progress it reported";
    // A leaf's bar takes its status colour; a parent without a status keeps the accent.
    this.fill.className = node.status ? `fill ${statusClass(node.status)}` : "fill";
    this.percent.textContent = formatPercent(node.progress);
  }

  /** A history read over REST (undefined: keep the last one); the sparkline ends at the node's live state. */
  setHistory(history) {
    if (history) this.history = history;
    const node = this.node;
    if (typeof node.update_time === "number" && typeof node.progress === "number") {
      const last = this.trail[this.trail.length - 1];
      if (!last || node.update_time > last[0]) this.trail.push([node.update_time, node.progress]);
      if (this.trail.length > TRAIL) this.trail.splice(0, this.trail.length - TRAIL);
    }
    this.spark.render(this.history, node, this.trail);
  }

  renderFields(node) {
    const items = [];
    for (const [name, text] of extraFields(node)) {
      const item = el("div", "field");
      item.append(el("dt", "", name), el("dd", "", text));
      items.push(item);
    }
    this.fields.replaceChildren(...items);
    this.fields.hidden = items.length === 0;
  }

  /** Elapsed time and ETA, against the server's clock; called every second. */
  renderTimes() {
    this.times.textContent = formatTimes(this.node);
    // A node under way: its sparkline's tail runs on to now, each second.
    if (this.node.end_time === undefined) this.spark.render(this.history, this.node, this.trail);
    const stalled = isStalled(this.node);
    this.stalled.hidden = !stalled;
    this.element.classList.toggle("is-stalled", stalled);
    this.stalled.title = stalled ? `Running, but no change since ${new Date(this.node.update_time).toLocaleString()}` : "";
  }

  /** What leads the row: "toggle" (expand/collapse), "open" (a link to *href*) or "none". */
  setLead(kind, href) {
    const current = this.lead.firstElementChild;
    if (kind === "toggle") {
      let button = current && current.tagName === "BUTTON" ? current : null;
      if (!button) {
        button = el("button", "toggle");
        button.type = "button";
        button.addEventListener("click", () => this.onToggle(this));
        this.lead.replaceChildren(button);
      }
      button.setAttribute("aria-expanded", String(this.expanded));
      button.setAttribute("aria-label", `${this.expanded ? "Collapse" : "Expand"} ${nodeLabel(this.node)}`);
      button.textContent = this.expanded ? "▾" : "▸";
    } else if (kind === "open") {
      if (!current || current.tagName !== "A") {
        const link = el("a", "open", "open ›");
        link.href = href;
        this.lead.replaceChildren(link);
      }
      this.lead.firstElementChild.setAttribute("aria-label", `Open ${nodeLabel(this.node)} on its own page`);
    } else {
      this.lead.replaceChildren();
    }
  }

  /** The "show more" button under the children, with how many are *left* when known. */
  setMore(visible, left = 0) {
    this.more.hidden = !visible;
    this.more.textContent = left > 0 ? `Show more (${left} more)` : "Show more";
  }
}

/** What both pages share: a list of rows, by key; a note line; times that move on every second. */
export class RowsView {
  /**
   * @param {string} listClass  the list's CSS class ("tree" or "listing")
   * @param {object} opts       limit: rows per page read; problem(message): report an error
   */
  constructor(key, listClass, { limit, problem }) {
    this.key = key;
    this.limit = limit;
    this.problem = problem;
    this.rows = new Map();      // key -> NodeRow on the page
    this.note = el("p", "note", "Loading…");
    this.list = el("ul", listClass);
  }

  clear() {
    this.rows.clear();
    this.list.replaceChildren();
  }

  /** Every second: elapsed times and ETAs move on. */
  tick() {
    for (const row of this.rows.values()) row.renderTimes();
  }

  showNote(text) {
    this.note.textContent = text;
    this.note.hidden = !text;
  }
}
