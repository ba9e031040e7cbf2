"""Input limits: every bound the service enforces on what clients send, in one place.

The "Limits" table of docs/api.md is written from this module; change a default here
and there together.
"""
from __future__ import annotations

from dataclasses import dataclass

# Node keys -----------------------------------------------------------------
#: Longest node key, in bytes: AMQP routing keys cannot be longer.
MAX_KEY_BYTES = 255
#: Most segments (dot-separated parts) in a node key.
MAX_KEY_SEGMENTS = 32
#: Longest single segment, in characters.
MAX_SEGMENT_CHARS = 64

# Weights ---------------------------------------------------------------------
#: Weights are kept as exact integers of this many units per 1.0 of weight, so
#: the running sum of weights on a parent never drifts (see lua/include/milli.lua).
WEIGHT_UNITS = 1000
#: Largest weight accepted.
MAX_WEIGHT = 1_000_000
#: Smallest positive weight accepted (one weight unit); 0 is also accepted.
MIN_POSITIVE_WEIGHT = 1 / WEIGHT_UNITS


@dataclass(frozen=True)
class Limits:
    """Per-deployment limits on updates and reads (all have documented defaults)."""

    #: Most fields in one update (not counting `key` and `ts`).
    max_fields_per_update: int = 64
    #: Most client fields a node may hold in total, across all its updates.
    max_fields_per_node: int = 128
    #: Most nodes one tree may hold (0: no cap); updates that would create more
    #: are refused with a 403 (REST) or dead-lettered (AMQP).
    max_nodes_per_tree: int = 1_000_000
    #: Longest field name, in characters.
    max_field_name_chars: int = 64
    #: Longest field value once encoded as JSON, in bytes.
    max_value_bytes: int = 8192
    #: Deepest nesting of arrays and objects in a field's value (1: a flat
    #: array or object).  orjson parses at most 1,024 levels of a whole body.
    max_value_depth: int = 32
    #: Longest `status` string, in characters.
    max_status_chars: int = 64
    #: Largest request body or AMQP message body, in bytes.
    max_body_bytes: int = 4 * 1024 * 1024
    #: Most updates in one batch (REST array or AMQP bulk message).
    max_batch_updates: int = 10_000
    #: Default and largest page of children per node in a read.
    default_children_limit: int = 1000
    max_children_limit: int = 10_000
    #: Deepest read (depth=1 is the node alone).
    max_read_depth: int = 16
    #: Most nodes loaded in one read, and most child keys listed in one read.
    max_read_nodes: int = 20_000
    max_read_child_keys: int = 200_000
