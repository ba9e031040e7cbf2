"""Node keys (what clients name) and Redis keys (where nodes are stored).

Node keys are dotted paths such as ``_portal.job123.stage_input.fileabc``.

Tree root rule: a key's tree root is its prefix up to and including the first
segment that does not start with ``_``.  ``_portal.job123`` is the root of
every key below it; ``_portal`` is a *namespace*: it lists the trees under it
but is never aggregated.  A key made only of ``_`` segments is a namespace.
Keys without a leading ``_`` segment (``portal.job123...``) all fall into one
tree rooted at their first segment (``portal``): one hot root, one hash slot.

Redis layout (``P`` is the deployment's key prefix, ``{R}`` the tree root as a
Redis Cluster hash tag, so every key of one tree lives in one slot):

    P:{R}:t          hash    one record per node of the tree (field: the node key):
                             id, parent id, weight, progress, sums, times, eta
                             state, status and children's status counts,
                             packed (lua/include/record_format.lua)
    P:{R}:c:<id>     zset    children of node <id>: member segment, score first-seen order
    P:{R}:s:<id>     zset    the same children by status: members status|order|segment, score 0 (children.lua)
    P:{R}:h:<id>     string  the progress history of node <id>: its step, packed samples
                             (lua/include/history.lua, engine/history.py)
    P:{R}:ids        string  node id counter of the tree
    P:{R}:gc         list    '<id> <key>' of detached nodes whose storage is not freed yet
    P:{R}:out        hash    completion events not yet published (id -> event)
    P:{R}:lc         hash    the job root's lifecycle notices so far (server/lifecycle.py)
    P:{R}:w          string  present while some server has live-feed subscribers of the tree
    P:{R}:f          channel the tree's changes, published while it is watched
    P:{N}:ns         zset    trees and namespaces directly under namespace N, by first-seen order
    P:{N}:nsr        zset    the same members, scored by last update time (ms)
    P:{N}:nsn        string  first-seen counter of namespace N
    P:{N}:w, P:{N}:f         watch marker and channel of namespace N (its trees' changes)
    P:gc-trees       set     tree roots with garbage left to free

Why the records of a tree share one hash: an update to a leaf of a depth-5
tree changes 5 nodes; reading and writing them as fields of one hash (one
HMGET and one HSET per tree per call) costs a fraction of a hash per node
(bench/README.md has the figures).

A record is valid only under its parent's current id, so detaching a subtree
(deleting one record) makes all of it unreachable at once; its storage is
then freed in bounded chunks (lua/collect_garbage.lua).  The top-level
namespace (the one above ``_portal``) uses the tag ``{*}``, which no valid
key can produce.
"""
from __future__ import annotations

import re
from functools import lru_cache

from .errors import InvalidKey
from .limits import MAX_KEY_BYTES, MAX_KEY_SEGMENTS, MAX_SEGMENT_CHARS

#: Characters allowed in a key segment.  Dots separate segments; ``*`` and
#: ``#`` are AMQP wildcards, ``{}`` Redis hash-tag braces, ``/`` a URL separator.
SEGMENT_CHARS = "A-Za-z0-9_:@~-"
_SEGMENT = f"[{SEGMENT_CHARS}]{{1,{MAX_SEGMENT_CHARS}}}"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT}){{0,{MAX_KEY_SEGMENTS - 1}}}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_:.-]{1,64}")

#: Name of the top-level namespace (the parent of ``_portal`` and of bare roots).
TOP = ""
_TOP_TAG = "*"

KEY_RULES = (
    f"segments of 1-{MAX_SEGMENT_CHARS} characters from [{SEGMENT_CHARS}] separated by dots, "
    f"at most {MAX_KEY_SEGMENTS} segments and {MAX_KEY_BYTES} bytes"
)


@lru_cache(maxsize=65536)
def check_key(key: str) -> str:
    """Return *key* if it is a valid node key, else raise InvalidKey."""
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY_BYTES
        or not _KEY_RE.fullmatch(key)
    ):
        raise InvalidKey(f"invalid key {key!r}: {KEY_RULES}")
    return key


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"invalid key prefix {prefix!r}: 1-64 characters from [A-Za-z0-9_:.-]")
    return prefix


@lru_cache(maxsize=65536)
def tree_root(key: str) -> str | None:
    """The tree root of a valid *key*, or None when *key* is a namespace."""
    start = 0
    while True:
        end = key.find(".", start)
        if key[start] != "_":
            return key if end < 0 else key[:end]
        if end < 0:
            return None
        start = end + 1


def relative_key(key: str, root: str) -> str:
    """*key* relative to its tree *root*, as the record hash names it: '' for
    the root itself, 'a.b' for '<root>.a.b'."""
    return "" if key == root else key[len(root) + 1:]


def is_namespace(key: str) -> bool:
    return key == TOP or tree_root(key) is None


def parent_of(key: str) -> str:
    """The key one level up; the top namespace for a single segment."""
    cut = key.rfind(".")
    return TOP if cut < 0 else key[:cut]


def namespace_chain(root: str) -> list[tuple[str, str]]:
    """(namespace, child) index entries that make *root* listable, innermost first.

    ``_a._b.job`` -> [("_a._b", "_a._b.job"), ("_a", "_a._b"), ("", "_a")]
    """
    chain = []
    child = root
    while child:
        ns = parent_of(child)
        chain.append((ns, child))
        child = ns
    return chain


class RedisKeys:
    """Redis key names of one deployment (one key prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self.gc_trees = f"{prefix}:gc-trees"

    def tree(self, root: str) -> str:
        """Common prefix of every key of the tree *root* (ends with ':')."""
        return f"{self.prefix}:{{{root}}}:"

    def records(self, root: str) -> str:
        """The record hash of a tree: the key every script of that tree declares."""
        return f"{self.prefix}:{{{root}}}:t"

    def history(self, root: str, node_id: int | str) -> str:
        """The progress history of node *node_id* of a tree (lua/include/history.lua)."""
        return f"{self.prefix}:{{{root}}}:h:{node_id}"

    def ns(self, namespace: str) -> str:
        """First-seen index of a namespace; ``nsr`` and ``nsn`` are derived from it."""
        return self.ns_base(namespace) + "ns"

    def ns_base(self, namespace: str) -> str:
        return f"{self.prefix}:{{{namespace or _TOP_TAG}}}:"

    def feed_base(self, key: str) -> str:
        """Common prefix of the watch marker ('w') and channel ('f') a live-feed
        subscription to *key* needs: its tree's, or its namespace's."""
        root = tree_root(key) if key else None
        return self.tree(root) if root else self.ns_base(key)

    def ns_recent(self, namespace: str) -> str:
        return self.ns(namespace) + "r"
