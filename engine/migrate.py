"""Bringing a prefix's stored trees to the record format this version writes.

Format 2 kept each parent's record whole; format 3 splits it into the hot
part every update below the parent rewrites and the cold rest
(lua/include/record.lua).  A prefix still in format 2 is converted when the
engine starts, tree by tree, in bounded script calls (lua/migrate_records.lua),
then marked as format 3.  The conversion is idempotent: several processes
starting at once, or one that serves format 3 while another still converts,
leave the same records.  Format 1 is not converted (engine.py refuses it).
"""
from __future__ import annotations

import logging

from .errors import ProgressError, redis_errors

log = logging.getLogger("sca_progress.engine")

#: Record formats migrate() converts from.
CONVERTIBLE = frozenset({2})
#: Fields a conversion call looks at (the HSCAN COUNT hint): bounds each call.
CHUNK = 500


async def migrate(engine, stored: int, target: int) -> int:
    """Convert every tree of *engine*'s prefix from format *stored* to *target*
    and mark the prefix so; returns the number of trees looked at."""
    prefix = engine.keys.prefix
    log.warning("converting the progress trees under the prefix %r from record format %d to %d",
                prefix, stored, target)
    trees = split = 0
    with redis_errors():
        async for key in engine.redis.scan_iter(match=f"{prefix}:{{*}}:t", count=1000):
            key = key.decode() if isinstance(key, bytes) else key
            cursor = "0"
            while True:
                (reply,) = await engine.scripts.run(engine.redis, [("migrate_records", [key], [cursor, CHUNK])])
                if isinstance(reply, ProgressError):
                    raise reply
                cursor, n = reply[0], reply[1]
                cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
                split += n
                if cursor == "0":
                    break
            trees += 1
        await engine.redis.set(f"{prefix}:format", str(target))
    log.warning("converted %d trees (%d parent records split); the prefix %r is in record format %d",
                trees, split, prefix, target)
    return trees
