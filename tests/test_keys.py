import pytest

from sca_progress.engine import InvalidKey
from sca_progress.engine.keys import RedisKeys, check_key, is_namespace, namespace_chain, parent_of, tree_root


@pytest.mark.parametrize("key", ["a", "_portal.job123", "_sca.123.prep", "a-b.c_d.e:f@g~h", "x" * 64,
                                 ".".join(["s"] * 32)])
def test_valid_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", ".", "a.", ".a", "a..b", "a b", "a/b", "a*b", "a#b", "{a}", "é",
                                 "x" * 65, ".".join(["s"] * 33), ".".join(["abcdefgh"] * 30)])
def test_invalid_keys(key):
    with pytest.raises(InvalidKey) as e:
        check_key(key)
    assert e.value.code == "bad-key"


def test_key_at_most_255_bytes():
    key = ".".join(["a" * 63] * 4) + ".abc"  # 4*63 + 3 dots + 4 = 259
    with pytest.raises(InvalidKey):
        check_key(key)
    check_key(key[:255].rstrip("."))


def test_tree_root_rule():
    assert tree_root("_portal.job123.stage_input.fileabc") == "_portal.job123"
    assert tree_root("_portal.job123") == "_portal.job123"
    assert tree_root("_a._b.job.x") == "_a._b.job"
    assert tree_root("portal.job123.x") == "portal"  # bare keys: one tree per first segment
    assert tree_root("_portal") is None and is_namespace("_portal")
    assert tree_root("_a._b") is None and is_namespace("_a._b")
    assert is_namespace("") and not is_namespace("_portal.job1")


def test_namespace_chain_and_parent():
    assert namespace_chain("_a._b.job") == [("_a._b", "_a._b.job"), ("_a", "_a._b"), ("", "_a")]
    assert namespace_chain("portal") == [("", "portal")]
    assert parent_of("a.b.c") == "a.b" and parent_of("a") == ""


def test_every_key_of_a_tree_shares_its_hash_tag():
    keys = RedisKeys("progress")
    assert keys.records("_portal.job1") == "progress:{_portal.job1}:t"
    assert keys.tree("_portal.job1").startswith("progress:{_portal.job1}:")
    assert keys.ns("_portal") == "progress:{_portal}:ns" and keys.ns_recent("_portal") == "progress:{_portal}:nsr"
    assert keys.ns("") == "progress:{*}:ns"


@pytest.mark.parametrize("prefix", ["", "a{b}", "a b", "x" * 65])
def test_bad_prefix(prefix):
    with pytest.raises(ValueError):
        RedisKeys(prefix)
