// Pages of a node's children, read over REST with `limit` and `cursor`, and
// the live updates that arrive while a page is on its way: those are held and
// replayed once the page is in, so nothing falls between the read and the feed.

import { api, statusPath } from "./api.js";

export class ChildPages {
  /** @param {object} params  query of every read (depth, limit, order) */
  constructor(key, params) {
    this.key = key;
    this.params = params;
    this.cursor = null;   // where the next page starts (`_children_next`); null once all are in
    this.loading = false;
    this.held = [];
  }

  /** Read the first page, or the next one; resolves to the parent with its children as `tasks`. */
  async read(first) {
    this.loading = true;
    try {
      const cursor = first ? null : this.cursor;
      const body = await api(statusPath(this.key, { ...this.params, cursor }));
      this.cursor = body._children_next || null;
      return body;
    } finally {
      this.loading = false;
    }
  }

  /** Hold *node* while a page is loading (true); otherwise it is the caller's (false). */
  hold(node) {
    if (this.loading) this.held.push(node);
    return this.loading;
  }

  /** The nodes held while the page loaded, to apply now. */
  release() {
    const held = this.held;
    this.held = [];
    return held;
  }
}

/** A node without its lists of children (`tasks`, `_children`): a row keeps no copy of them. */
export function ownFields(body) {
  const { tasks, _children, ...node } = body;
  return node;
}
