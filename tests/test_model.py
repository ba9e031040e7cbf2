"""Property test: random trees, weights, posts to leaves and parents, deletes.

After every step, every node's stored progress, status counts, children and
fields equal the plain-Python model (tests/model.py) within 1e-9, and paging
through each parent's children in each status (read with status=) lists
exactly the model's, in first-seen order.  One node can grow wide (past the
64 children a record lists), so the status index of wide parents is checked
the same way.  Batches are applied through one engine call, so coalescing is
exercised too.
"""
from __future__ import annotations

import asyncio
import uuid

import hypothesis.strategies as st
import redis.asyncio as aredis
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from sca_progress.engine import APPLIED, STALE, Engine, NotFound

from .conftest import RUN_PREFIX
from .model import Model

ROOTS = ["_t.j1", "_t.j2", "bare"]
SEGS = ["a", "b", "c"]

#: The children of WIDE can outgrow a record's list of 64 (lua/include/children.lua).
WIDE = "_t.j1.w"
WIDE_KIDS = [f"{WIDE}.x{i}" for i in range(72)]

keys = st.one_of(
    st.builds(lambda root, path: ".".join([root, *path]), st.sampled_from(ROOTS),
              st.lists(st.sampled_from(SEGS), max_size=3)),
    st.sampled_from(WIDE_KIDS),
)
progress = st.one_of(st.sampled_from([0, 1, 0.5]), st.floats(0, 1, allow_nan=False))
weight = st.sampled_from([0, 0.001, 0.5, 1, 2, 10, 100, 1e6, 0.3333])
STATUSES = ["waiting", "running", "finished", "failed", "canceled", "odd state"]
status = st.sampled_from(STATUSES)
fields = st.dictionaries(
    st.sampled_from(["progress", "weight", "status", "msg", "ts", "extra"]),
    st.none(),
    max_size=5,
).flatmap(lambda d: st.fixed_dictionaries({
    name: {
        "progress": st.one_of(st.none(), progress),
        "weight": st.one_of(st.none(), weight),
        "status": st.one_of(st.none(), status),
        "msg": st.one_of(st.none(), st.text(max_size=20)),
        "ts": st.integers(0, 6),
        "extra": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.lists(st.booleans(), max_size=3)),
    }[name] for name in d
}))


class TreeMachine(RuleBasedStateMachine):
    redis_url = ""
    cluster = False  # a Redis Cluster node's URL: the engine routes by slot (engine/cluster.py)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = (aredis.RedisCluster if self.cluster else aredis.Redis).from_url(self.redis_url)
        self.engine = Engine(self.redis, prefix=f"{RUN_PREFIX}-sm-{uuid.uuid4().hex[:8]}")
        self.run(self.engine.start())
        self.model = Model()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.engine.close())
        self.run(self.redis.aclose())
        self.loop.close()

    @rule(batch=st.lists(st.tuples(keys, fields), min_size=1, max_size=6))
    def apply_batch(self, batch):
        result = self.run(self.engine.apply(batch))
        for (key, f), outcome in zip(batch, result.results):
            applied = self.model.post(key, f)
            assert outcome is (APPLIED if applied else STALE), (key, f, outcome)

    @rule(batch=st.lists(st.tuples(keys, fields), min_size=1, max_size=4))
    def apply_one_by_one(self, batch):
        """Each update in a call of its own: the commonest call (one update of
        its tree) takes the script's fast path (apply_single)."""
        for key, f in batch:
            self.apply_batch([(key, f)])

    @rule(data=st.data(), n=st.integers(60, 72))
    def grow_wide(self, data, n):
        """Post to the first n children of WIDE at once, each a status or none."""
        batch = [(k, {"status": data.draw(st.one_of(st.none(), status))}) for k in WIDE_KIDS[:n]]
        self.apply_batch(batch)

    @precondition(lambda self: self.model.nodes)
    @rule(data=st.data())
    def delete(self, data):
        key = data.draw(st.sampled_from(sorted(self.model.nodes)))
        self.run(self.engine.delete(key))
        self.model.delete(key)

    @precondition(lambda self: self.model.nodes)
    @rule()
    def collect_garbage(self):
        self.run(self.engine.collect_garbage())

    @invariant()
    def matches_model(self):
        seen = set()
        for root in ROOTS:
            try:
                tree = self.run(self.engine.read(root, depth=6))
            except NotFound:
                assert root not in self.model.nodes
                continue
            stack = [tree]
            while stack:
                node = stack.pop()
                key = node["key"]
                seen.add(key)
                want = self.model.nodes[key]
                assert abs(node.get("progress", 0) - self.model.progress(key)) <= 1e-9, key
                assert node.get("_children", []) == want["children"], key
                assert node.get("_status_counts", {}) == (self.model.status_counts(key) if want["children"] else {})
                for name, value in want["fields"].items():
                    if name != "progress":
                        assert node[name] == value, (key, name)
                assert ("end_time" in node) == (want["fields"].get("status") in ("finished", "failed", "canceled"))
                stack.extend(node.get("tasks", []))
        assert seen == set(self.model.nodes)

    @invariant()
    def children_by_status_match_model(self):
        """Every parent's children by status, page by page, against the model:
        the (parent, status) pairs are read concurrently (one round trip a page)."""
        checks = []
        for key, node in self.model.nodes.items():
            if not node["children"]:
                continue
            # Only a wide parent keeps an index that could hold a stale
            # member in a status none of its children has now: ask it all.
            names = [*STATUSES, "none"] if len(node["children"]) > 64 else [*self.model.status_counts(key), "odd"]
            for name in names:
                want = [c for c in node["children"] if (self.model.nodes[c]["fields"].get("status") or "none") == name]
                checks.append(self._pages_in_status(key, name, want))

        async def all_checks():
            await asyncio.gather(*checks)

        self.run(all_checks())

    async def _pages_in_status(self, key: str, name: str, want: list[str]) -> None:
        got, cursor = [], None
        while True:
            page = await self.engine.read(key, limit=25, cursor=cursor, status=name)
            assert page["_children_total"] == len(want), (key, name)
            got.extend(page["_children"])
            cursor = page.get("_children_next")
            if not cursor:
                break
        assert got == want, (key, name)

def test_tree_matches_model(redis_url):
    TreeMachine.redis_url, TreeMachine.cluster = redis_url, False
    run_state_machine_as_test(TreeMachine)


def test_tree_matches_model_on_a_cluster(cluster):
    """The same machine on three masters: every call routed by the slot of its tree."""
    TreeMachine.redis_url, TreeMachine.cluster = cluster.url, True
    run_state_machine_as_test(TreeMachine)
