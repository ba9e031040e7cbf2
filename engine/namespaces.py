"""Namespace bookkeeping of the write path: listing trees, and live listings.

Every tree is listed in its namespaces (``_portal`` lists ``_portal.job123``;
``""``, the top, lists ``_portal``) by first-seen order and by last update
(index_trees.lua).  Writing the recency index on every update would cost a
script call in the namespace's own hash slot per batch, and every tree of a
busy namespace writes into that one slot, so the index is kept loosely:

* a tree this process does not know yet (new, or new to it) is listed in the
  same round trip as its batch, after the batch's call, by a script that
  lists it only if that call wrote it (list_written_tree.lua; on a single
  Redis, for batches of up to SPECULATE_MAX such trees); otherwise a tree
  the call created is indexed in a second round trip; either way it is
  listed before its first update is answered;
* after that, a tree with applied updates is indexed again at most once per
  ``refresh_ms`` (a process-local memo), the write riding along with the next
  batch's round trip (or the service's periodic flush);
* refused and stale updates never index anything.

The recency index is therefore up to a few seconds stale, which listings by
recency and the retention sweep (which re-checks each tree's update time
inside Redis before purging) tolerate.

A watched namespace (its marker ``<prefix>:{<ns>}:w`` exists) hears of every
tree written under it, published by the writer in the same round trip as the
batch.  Whether a namespace is watched is looked up (in that round trip too)
at most once per ``watch_check_ms``, so a listing subscriber may miss the
first second of changes; the live feed resynchronises namespace subscribers
after that long (server/feed.py).
"""
from __future__ import annotations

import time

from .keys import RedisKeys, namespace_chain, tree_root
from .scripts import pack

#: Most trees the memo remembers; past it, it starts over (each tree is
#: then indexed once more, which is harmless).
MEMO_SIZE = 200_000
#: Most trees unknown to the memo a batch lists in its own round trip (one
#: list_written_tree call each); a batch with more (a restart's first
#: batches) lists the ones it created in a second round trip instead.
SPECULATE_MAX = 16


class NamespaceIndex:
    def __init__(self, keys: RedisKeys, refresh_ms: int = 5000, watch_check_ms: int = 1000,
                 speculate: bool = True) -> None:
        self.keys = keys
        #: Whether unknown trees are listed in their batch's round trip (not
        #: on a Redis Cluster, where a tree and its namespaces lie in different slots).
        self.speculate = speculate
        self.refresh_ms = refresh_ms
        self.watch_check_ms = watch_check_ms
        self.feed_command = ""
        self._indexed: dict[str, int] = {}  # root -> when this process last indexed it (ms)
        self._due: set[str] = set()  # roots whose recency write waits for the next round trip
        self._watched: dict[str, tuple[float, bool]] = {}  # namespace -> (checked at, monotonic s; watched)

    # -- index writes ---------------------------------------------------------

    def calls(self, roots, now: int) -> list:
        """index_trees.lua calls listing *roots* (and their namespaces), in the
        order given: trees first seen in one batch are listed in its order."""
        by_ns: dict[str, dict[str, None]] = {}
        for root in roots:
            for ns, child in namespace_chain(root):
                by_ns.setdefault(ns, {})[child] = None
        return [("index_trees", [self.keys.ns(ns)], [now, *children]) for ns, children in by_ns.items()]

    def take_due(self, now: int) -> list:
        """The index calls of every tree whose recency write is due."""
        if not self._due:
            return []
        due, self._due = self._due, set()
        return self.calls(due, now)

    def listing_calls(self, roots, now: int) -> tuple[list, list[str]]:
        """list_written_tree calls for the batch's own round trip (after its
        write calls): one per tree of *roots* this process has not indexed.
        Returns (calls, their roots); none when there are too many, or on a
        Redis Cluster."""
        if not self.speculate:
            return [], []
        unknown = [root for root in roots if root not in self._indexed]
        if not unknown or len(unknown) > SPECULATE_MAX:
            return [], []
        calls = []
        for root in unknown:
            chain = namespace_chain(root)
            calls.append(("list_written_tree", [self.keys.records(root), *(self.keys.ns(ns) for ns, _ in chain)],
                          [now, *(child for _, child in chain)]))
        return calls, unknown

    def applied(self, roots, created, now: int, listed=()) -> list:
        """Note the trees a batch applied updates to, and those listed in its
        round trip (listing_calls that answered 1); return the index calls
        due at once (the trees it created and did not list yet)."""
        memo = self._indexed
        if len(memo) > MEMO_SIZE:
            memo.clear()
        for root in listed:
            memo[root] = now
        for root in created:
            memo[root] = now
        horizon = now - self.refresh_ms
        for root in roots:
            if memo.get(root, horizon) <= horizon:
                memo[root] = now
                self._due.add(root)
        self._due.difference_update(created)
        self._due.difference_update(listed)
        unlisted = [root for root in created if root not in listed] if listed else created
        return self.calls(unlisted, now) if unlisted else []

    def requeue(self, calls: list) -> None:
        """Index calls that failed: their trees are due again."""
        for _, _, args in calls:
            self._due.update(c for c in args[1:] if tree_root(c) == c)

    def forget(self, root: str) -> None:
        """A tree was deleted: when it comes back, it is new."""
        self._indexed.pop(root, None)
        self._due.discard(root)

    # -- live listings ----------------------------------------------------------

    def feed_commands(self, roots, now: int) -> tuple[list, list[str]]:
        """Commands for the batch's round trip: publish the trees written under
        each namespace known to be watched, and look up namespaces whose watch
        state is unknown or old.  Returns (commands, the namespaces looked up):
        the commands start with one EXISTS per namespace looked up, in order."""
        if not self.feed_command:
            return [], []
        by_ns: dict[str, set[str]] = {}
        for root in roots:
            for ns, child in namespace_chain(root):
                by_ns.setdefault(ns, set()).add(child)
        clock = time.monotonic()
        stale = clock - self.watch_check_ms / 1000
        lookups, publishes = [], []
        for ns, children in by_ns.items():
            base = self.keys.ns_base(ns)
            checked = self._watched.get(ns)
            if checked is None or checked[0] < stale:
                lookups.append(ns)
            if checked is not None and checked[1]:
                publishes.append((None, (self.feed_command, base + "f", pack([now, sorted(children), False])), ()))
        exists = [(None, ("EXISTS", self.keys.ns_base(ns) + "w"), ()) for ns in lookups]
        return exists + publishes, lookups

    def watching(self, namespace: str) -> None:
        """This process has just started to watch *namespace* (its marker is
        set): its own writes need not wait for the next look-up."""
        self._watched[namespace] = (time.monotonic(), True)

    def watch_replies(self, lookups: list[str], replies: list) -> None:
        """Record the EXISTS replies of feed_commands' lookups (in order)."""
        clock = time.monotonic()
        for ns, reply in zip(lookups, replies):
            if isinstance(reply, int):
                self._watched[ns] = (clock, bool(reply))
