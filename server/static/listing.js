// A listing page: the trees of a namespace (/ui/_portal), or at the top (/)
// the namespaces and bare trees, most recently updated first.
//
// Pages come over REST (order=recent, "show more" follows the cursor).  The
// namespace's live feed sends the roots of the trees that changed: each moves
// to the top, and a new job appears there as it starts.

import { uiPath } from "./api.js";
import { olderThan } from "./format.js";
import { ChildPages, ownFields } from "./pages.js";
import { NodeRow, RowsView, el } from "./row.js";

export class ListingView extends RowsView {
  constructor(container, key, options) {
    super(key, "listing", options);
    this.pages = null;
    this.more = el("button", "more", "Show more");
    this.more.type = "button";
    this.more.hidden = true;
    this.more.addEventListener("click", () => this.load(false));
    container.replaceChildren(this.note, this.list, this.more);
  }

  // -- the live feed ----------------------------------------------------------

  /** The feed's snapshot lists trees in first-seen order: read the most recent page instead. */
  snapshot() {
    this.pages = new ChildPages(this.key, { depth: 2, order: "recent", limit: this.limit });
    this.load(true);
  }

  /** Changed entries: each moves to the top (the most recent ends first). */
  update({ nodes }) {
    const fresh = nodes.filter((node) => !(this.pages && this.pages.hold(node)));
    fresh.sort((a, b) => (a.update_time || 0) - (b.update_time || 0));
    for (const node of fresh) {
      const row = this.rows.get(node.key);
      if (row && olderThan(node, row.node)) continue;
      if (row) row.render(ownFields(node));
      this.list.prepend((row || this.addRow(node)).element);
    }
    this.showState();
  }

  removed({ removed }) {
    for (const key of removed) {
      const row = this.rows.get(key);
      if (row) row.element.remove();
      this.rows.delete(key);
    }
    this.showState();
  }

  // -- pages ------------------------------------------------------------------

  async load(first) {
    const pages = this.pages;
    this.more.disabled = true;
    let body = null;
    try {
      body = await pages.read(first);
    } catch (err) {
      this.problem(`${this.key || "top level"}: ${err.message}`);
    }
    if (pages !== this.pages) return;           // a newer snapshot took over
    this.more.disabled = false;
    if (body && first) this.clear();
    for (const node of (body && body.tasks) || []) {
      if (!this.rows.has(node.key)) this.list.append(this.addRow(node).element);
    }
    this.update({ nodes: pages.release() });
  }

  addRow(node) {
    const row = new NodeRow(node.key, 0, { href: uiPath(node.key) });
    row.render(ownFields(node));
    this.rows.set(node.key, row);
    return row;
  }

  showState() {
    this.more.hidden = !(this.pages && this.pages.cursor !== null);
    const empty = this.rows.size === 0 && !(this.pages && this.pages.loading);
    this.showNote(empty ? "Nothing here yet. New jobs appear as they start." : "");
  }
}
