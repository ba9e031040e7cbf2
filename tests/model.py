"""A plain-Python model of the progress tree, recomputed from scratch.

It states the semantics of docs/api.md as directly as possible, with no running
sums: after every applied update, each ancestor (parent first) takes
Σ(w·p)/Σw over its direct children when Σw > 0, else its own value (the
progress last posted to it directly, none if never).  The
property tests compare the engine against it.
"""
from __future__ import annotations

from sca_progress.engine.keys import parent_of, tree_root

SNAP = 1e-10


def weight_units(node: dict) -> int:
    w = node["fields"].get("weight", 1)
    return int(w * 1000 + 0.5)


class Model:
    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}  # key -> {"fields": {}, "children": [keys], "ts": None}

    def _ensure(self, key: str) -> dict:
        node = self.nodes.get(key)
        if node is None:
            root = tree_root(key)
            if key != root:
                self._ensure(parent_of(key))["children"].append(key)
            node = self.nodes[key] = {"fields": {}, "children": [], "ts": None, "own": None}
        return node

    def post(self, key: str, fields: dict) -> bool:
        """Apply one update; False when ignored as stale."""
        ts = fields.get("ts")
        node = self.nodes.get(key)
        if node is not None and ts is not None and node["ts"] is not None and ts < node["ts"]:
            return False
        node = self._ensure(key)
        for name, value in fields.items():
            if name == "ts":
                continue
            if value is None:
                node["fields"].pop(name, None)
            else:
                node["fields"][name] = value
            if name == "progress":
                node["own"] = value
        if ts is not None:
            node["ts"] = ts
        self._recompute_ancestors(key)
        return True

    def delete(self, key: str) -> None:
        root = tree_root(key)
        for k in [k for k in self.nodes if k == key or k.startswith(key + ".")]:
            del self.nodes[k]
        if key != root:
            self.nodes[parent_of(key)]["children"].remove(key)
            self._recompute_ancestors(key)

    def _recompute_ancestors(self, key: str) -> None:
        root = tree_root(key)
        while key != root:
            key = parent_of(key)
            node = self.nodes[key]
            sw = sum(weight_units(self.nodes[c]) for c in node["children"])
            if sw > 0:
                swp = sum(weight_units(self.nodes[c]) * self.progress(c) for c in node["children"])
                p = swp / sw
                node["fields"]["progress"] = 0 if p < SNAP else 1 if p > 1 - SNAP else p
            elif node["own"] is None:
                node["fields"].pop("progress", None)
            else:
                node["fields"]["progress"] = node["own"]

    def progress(self, key: str) -> float:
        return self.nodes[key]["fields"].get("progress", 0)

    def status_counts(self, key: str) -> dict:
        counts: dict[str, int] = {}
        for c in self.nodes[key]["children"]:
            st = self.nodes[c]["fields"].get("status") or "none"
            counts[st] = counts.get(st, 0) + 1
        return counts

    def roots(self) -> list[str]:
        return [k for k in self.nodes if tree_root(k) == k]
