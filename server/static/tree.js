// A tree page (/ui/<key>): the node and, below it, the levels the user opens.
//
// Expanding a row reads the first page of its children over REST ("show
// more" reads the next, with the cursor); the live feed keeps every row on
// the page current.  Rows can be expanded down to MAX_DEPTH levels below the
// page's root; a parent that deep links to a page of its own instead.

import { api, statusPath, uiPath } from "./api.js";
import { HistoryChart } from "./history.js";
import { childCount, olderThan } from "./format.js";
import { ChildPages, ownFields } from "./pages.js";
import { NodeRow, RowsView, el } from "./row.js";

export const MAX_DEPTH = 4;
/** Seconds between readings of the histories on the page (the feed keeps their last point live). */
export const HISTORY_EVERY = 30;
/** Seconds between readings of the page node's history chart. */
export const CHART_EVERY = 10;

function parentOf(key) {
  return key.slice(0, Math.max(0, key.lastIndexOf(".")));
}

export class TreeView extends RowsView {
  constructor(container, key, options) {
    super(key, "tree", options);
    this.expanded = new Set();  // keys the user expanded: expanded again after a snapshot
    const legend = el("p", "legend",
      "Striped bars are overall progress: the weighted progress of a step's parts, striped until done. "
      + "Solid bars are what a job reported. Times count from when a step first ran.");
    this.chart = new HistoryChart(key);
    this.ticks = 0;
    container.replaceChildren(this.chart.element, legend, this.note, this.list);
  }

  /** Every second; now and then the histories are read again. */
  tick() {
    super.tick();
    this.ticks += 1;
    if (this.ticks % CHART_EVERY === 0) this.chart.refresh();
    if (this.ticks % HISTORY_EVERY === 0) this.refreshHistories();
  }

  /** New histories for the rows on the page: one read per open row, of the children it shows. */
  async refreshHistories() {
    for (const row of [...this.rows.values()]) {
      if (!row.expanded) continue;
      const shown = Math.min(10000, Math.max(1, row.children.childElementCount));
      let body;
      try {
        body = await api(statusPath(row.key, { depth: 2, limit: shown, history: 1 }));
      } catch {
        continue;                               // the feed reports what is wrong with the page
      }
      for (const node of [body, ...(body.tasks || [])]) {
        const shownRow = this.rows.get(node.key);
        if (shownRow && node._history) shownRow.setHistory(node._history);
      }
    }
  }

  // -- the live feed ----------------------------------------------------------

  /** A fresh state of the page's root (and its first children): it replaces everything. */
  snapshot({ node }) {
    this.clear();
    if (node) {
      this.addRow(node, null, 0);
      this.chart.refresh();
      this.refreshHistories();                  // the feed's snapshot carries no histories
    }
    else this.showNote(`Nothing at ${this.key} yet. This page shows it as soon as it appears.`);
  }

  /** Changed nodes, ancestors first: update their rows, add new children of open rows. */
  update({ nodes }) {
    for (const node of nodes) {
      const row = this.rows.get(node.key);
      if (row) {
        this.refresh(row, node);
      } else if (node.key === this.key) {
        this.addRow(node, null, 0);                     // the root has appeared
      } else {
        this.addChild(node);
      }
    }
  }

  removed({ removed }) {
    for (const key of removed) {
      if (key === this.key || this.key.startsWith(`${key}.`)) {
        this.clear();
        this.showNote(`${this.key} was deleted.`);
        continue;
      }
      const row = this.rows.get(key);
      if (!row) continue;
      this.dropRowsBelow(key);
      this.rows.delete(key);
      row.element.remove();
      const parent = this.rows.get(parentOf(key));
      if (parent) this.decorate(parent);
    }
  }

  // -- rows -------------------------------------------------------------------

  addRow(node, parent, depth) {
    const row = new NodeRow(node.key, depth, {
      onToggle: () => this.toggle(row),
      onMore: () => this.loadPage(row, false),
    });
    this.rows.set(node.key, row);
    (parent ? parent.children : this.list).append(row.element);
    row.render(ownFields(node));
    this.decorate(row);
    if (depth === 0) {
      this.showNote("");
      this.expand(row, node);                   // the root is always open
    } else if (depth < MAX_DEPTH && this.expanded.has(node.key)) {
      this.expand(row, null);
    }
    return row;
  }

  /** A node not on the page yet: a new child of an open row, or one the page does not show. */
  addChild(node) {
    const parent = this.rows.get(parentOf(node.key));
    const pages = parent && parent.pages;
    if (!pages || pages.hold(node)) return;     // parent closed or off the page; or held for later
    if (pages.cursor === null) {                // all children are in: the new one goes last
      this.addRow(node, parent, parent.depth + 1);
      this.decorate(parent);
    }                                           // else it comes after pages not read yet
  }

  refresh(row, node) {
    if (olderThan(node, row.node)) return;      // a REST answer overtaken by the feed
    row.render(ownFields(node));
    if (row.depth === 0) this.chart.live(node);
    this.decorate(row);
  }

  /** What leads a row (toggle, link or nothing) and its "show more" button. */
  decorate(row) {
    if (row.depth === 0 || !childCount(row.node)) row.setLead("none");
    else if (row.depth >= MAX_DEPTH) row.setLead("open", uiPath(row.key));
    else row.setLead("toggle");
    const pages = row.pages;
    const left = (childCount(row.node) || 0) - row.children.childElementCount;
    row.setMore(Boolean(pages && pages.cursor !== null && !pages.loading), left);
  }

  toggle(row) {
    if (row.expanded) {
      this.expanded.delete(row.key);
      this.collapse(row);
    } else {
      this.expanded.add(row.key);
      this.expand(row, null);
    }
  }

  /** Open *row*: its children from *first* (a node with `tasks`) when that is a whole first page, else read. */
  expand(row, first) {
    row.expanded = true;
    row.children.hidden = false;
    row.pages = new ChildPages(row.key, { depth: 2, limit: this.limit, history: 1 });
    if (first && first.tasks && first.tasks.length <= this.limit && !first._children_next) {
      this.fillPage(row, first);
    } else if (childCount(row.node)) {
      this.loadPage(row, true);
    }
    this.decorate(row);
  }

  collapse(row) {
    row.expanded = false;
    row.pages = null;
    this.dropRowsBelow(row.key);
    row.children.replaceChildren();
    row.children.hidden = true;
    this.decorate(row);
  }

  async loadPage(row, first) {
    const pages = row.pages;
    const reading = pages.read(first);          // loading from here on: live updates are held
    this.decorate(row);                         // no "show more" while a page is on its way
    let body = null;
    try {
      body = await reading;
    } catch (err) {
      this.problem(`${row.key}: ${err.message}`);
    }
    if (this.rows.get(row.key) !== row || row.pages !== pages) return;  // replaced or closed meanwhile
    if (body) this.fillPage(row, body);
    this.update({ nodes: pages.release() });
    this.decorate(row);
  }

  fillPage(row, body) {
    this.refresh(row, body);
    for (const child of body.tasks || []) {
      if (!this.rows.has(child.key)) this.addRow(child, row, row.depth + 1);
    }
  }

  dropRowsBelow(key) {
    const prefix = `${key}.`;
    for (const k of this.rows.keys()) if (k.startsWith(prefix)) this.rows.delete(k);
  }
}
