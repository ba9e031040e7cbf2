"""The OpenAPI 3 document of the REST API, served at GET /openapi.json."""
from __future__ import annotations

from sca_progress.engine.keys import MAX_KEY_BYTES
from sca_progress.engine.limits import MAX_WEIGHT, MIN_POSITIVE_WEIGHT, Limits
from sca_progress.engine.read import CURSOR_PATTERN
from sca_progress.engine.updates import SERVER_FIELDS

_SEGMENT = r"[A-Za-z0-9_:@~-]{1,64}"
_PLAIN = r"[A-Za-z0-9:@~-][A-Za-z0-9_:@~-]{0,63}"  # a segment not starting with '_'
_AT_MOST_32 = r"(?=(?:[^.]+\.){0,31}[^.]+$)"

KEY = {"name": "key", "in": "path", "required": True,
       "description": "node key: dot-separated segments of [A-Za-z0-9_:@~-]; a key of '_' segments only is a "
                      "namespace",
       "schema": {"type": "string", "pattern": rf"^{_SEGMENT}(\.{_SEGMENT}){{0,31}}$", "maxLength": MAX_KEY_BYTES}}

#: A key that names a node of a tree (what can be written or deleted): at least
#: one segment does not start with '_' (a key of '_' segments only is a namespace).
TREE_KEY = {**KEY, "description": "node key of a tree: dot-separated segments of [A-Za-z0-9_:@~-], at least one "
                                  "not starting with '_' (namespaces cannot be written or deleted)",
            "schema": {"type": "string", "maxLength": MAX_KEY_BYTES,
                       "pattern": rf"^{_AT_MOST_32}(?:_[A-Za-z0-9_:@~-]{{0,63}}\.)*{_PLAIN}(?:\.{_SEGMENT})*$"}}

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}

NODE = {"type": "object", "required": ["key"], "additionalProperties": True, "properties": {
    "key": {"type": "string"},
    "namespace": {"type": "boolean"},
    "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "weight": {"type": "number", "minimum": 0},
    "status": {"type": "string"}, "msg": {"type": "string"}, "name": {"type": "string"},
    "start_time": {"type": "integer"}, "update_time": {"type": "integer"},
    "end_time": {"type": "integer"}, "eta": {"type": "integer"},
    "_status_counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    "_stalled": {"const": True}, "_stalled_since": {"type": "integer"}, "_stalled_count": {"type": "integer"},
    "stalled": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
    "_more": {"type": "array", "items": {"type": "object", "properties": {
        "key": {"type": "string"}, "_children_next": {"type": "string"}}}},
    "_children": {"type": "array", "items": {"type": "string"}},
    "_children_total": {"type": "integer"}, "_children_next": {"type": "string"},
    "_children_status": {"type": "string"},
    "_history": {"$ref": "#/components/schemas/History"},
    "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
    "_now": {"type": "integer"}, "_applied": {"type": "boolean"}, "_reason": {"type": "string"}}}

#: A node's progress history (?history=1): sample j is its progress at start_time + j × step_ms.
HISTORY = {"type": "object", "required": ["step_ms", "samples", "trend_rate", "trend_eta"], "properties": {
    "step_ms": {"type": "integer", "minimum": 1},
    "samples": {"type": "array", "items": {"type": ["number", "null"], "minimum": 0, "maximum": 1}},
    "trend_rate": {"type": ["number", "null"], "description": "progress per second of the trend line"},
    "trend_eta": {"type": ["integer", "null"], "description": "when the trend line reaches 1 (ms)"}}}

#: GET /status/<key>/history.
HISTORY_POINTS = {"type": "object", "required": ["key", "start_time", "step_ms", "points", "trend_rate",
                                                 "trend_eta", "_now"], "properties": {
    "key": {"type": "string"}, "start_time": {"type": "integer"},
    "update_time": {"type": ["integer", "null"]}, "progress": {"type": ["number", "null"]},
    "status": {"type": ["string", "null"]}, "eta": {"type": ["integer", "null"]},
    "step_ms": {"type": "integer", "minimum": 1},
    "points": {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2}},
    "trend_rate": {"type": ["number", "null"]}, "trend_eta": {"type": ["integer", "null"]},
    "_now": {"type": "integer"}}}

_LIMITS = Limits()
UPDATE = {
    "type": "object", "additionalProperties": True, "maxProperties": _LIMITS.max_fields_per_update,
    "description": f"any other field holds any JSON value; each value is at most {_LIMITS.max_value_bytes} "
                   "bytes as JSON, and a string must be valid Unicode (no lone surrogates)",
    "propertyNames": {"minLength": 1, "maxLength": _LIMITS.max_field_name_chars, "pattern": "^[^_]",
                      "not": {"enum": sorted(SERVER_FIELDS)}},
    "properties": {
        "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "weight": {"anyOf": [{"type": "null"}, {"const": 0},
                             {"type": "number", "minimum": MIN_POSITIVE_WEIGHT, "maximum": MAX_WEIGHT}]},
        "status": {"type": ["string", "null"], "minLength": 1, "maxLength": _LIMITS.max_status_chars,
                   "not": {"const": "none"}, "description": "'none' is reserved: it names nodes without a status"},
        "msg": {"type": ["string", "null"]}, "name": {"type": ["string", "null"]},
        "ts": {"type": ["number", "null"], "minimum": 0,
               "description": "producer timestamp, ms since the epoch (or a counter); an update older than the "
                              "node's last ts is ignored; more than a day ahead of the server's clock: 400 bad-ts"}}}

#: A batch item is checked on its own: one that is not an update with a key
#: gets an error in its result, and the others still apply.
READY = {"type": "object", "required": ["status"], "properties": {
    "status": {"enum": ["ready", "not-ready"]}, "problems": {"type": "array", "items": {"type": "string"}},
    "_now": {"type": "integer"}}}
BATCH_ITEM = {"description": "an Update with a string \"key\"; an item that is not one is answered with an "
                             "error in its result (ok: false) and the rest of the batch still applies",
              "examples": [{"key": "_portal.job1.stage_input.file1", "progress": 0.5}]}


def _errors(*codes: int) -> dict:
    """The error answers of an operation: *codes*, and those any request may get
    (414: a URL over 8 KiB, 431: headers over 32 KiB)."""
    return {str(c): {"description": "error", "content": {"application/json": {"schema": ERROR}}}
            for c in (*codes, 414, 431)}


def openapi() -> dict:
    node = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "sca-progress", "version": "1", "description":
                 "Hierarchical job progress: post updates, read trees. Live feeds: socket.io at /socket.io/ "
                 "and Server-Sent Events at /events/{key} (see docs/feeds.md)."},
        "components": {
            "schemas": {"Node": NODE, "Error": ERROR, "Update": UPDATE, "History": HISTORY},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                           "description": "only when the server runs with --jwt-secret or "
                                                          "--jwt-public-key"}}},
        "security": [{}, {"bearer": []}],
        "paths": {
            "/health": {"get": {"summary": "Is Redis reachable?", "security": [], "responses": {
                "200": {"description": "ok or degraded", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status", "redis"], "properties": {
                        "status": {"type": "string"}, "redis": {"type": "string"}, "amqp": {"type": "object"},
                        "_now": {"type": "integer"}}}}}},
                **_errors(503)}}},
            "/health/live": {"get": {"summary": "Does the process run? (liveness probe)", "security": [],
                                     "responses": {"200": {"description": "live", "content": {
                                         "application/json": {"schema": {"type": "object", "required": ["status"],
                                                                         "properties": {"status": {"const": "live"}}}}}}}}},
            "/health/ready": {"get": {"summary": "Can it serve? Redis answers and, when configured, AMQP consumes "
                                                 "(readiness probe)", "security": [], "responses": {
                "200": {"description": "ready", "content": {"application/json": {"schema": READY}}},
                "503": {"description": "not ready: problems says why", "content": {
                    "application/json": {"schema": READY}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text format)", "security": [], "responses": {
                "200": {"description": "the text exposition format, version 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/status/{key}/history": {"get": {
                "summary": "A node's progress history: [time, progress] points (the samples, then the node's "
                           "current point) and the trend line's rate and eta",
                "parameters": [TREE_KEY], "responses": {
                    "200": {"description": "the history", "content": {"application/json": {
                        "schema": HISTORY_POINTS}}}, **_errors(400, 401, 403, 404, 503)}}},
            "/status/{key}": {
                "get": {"summary": "A node and its subtree", "parameters": [
                    KEY,
                    {"name": "depth", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 16}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                    {"name": "cursor", "in": "query", "description": "a value returned in _children_next",
                     "schema": {"type": "string", "pattern": f"^({CURSOR_PATTERN})?$"}},
                    {"name": "status", "in": "query", "description": "list only the node's children in this "
                     "status ('none': without a status), by cursor, in first-seen order; _children_total counts "
                     "them (tree nodes only: a namespace answers 400 bad-status)",
                     "schema": {"type": "string", "minLength": 1, "maxLength": _LIMITS.max_status_chars}},
                    {"name": "history", "in": "query", "description": "1: every tree node of the answer "
                     "with its progress history (_history: samples, step_ms, trend_rate, trend_eta)",
                     "schema": {"type": "string", "enum": ["0", "1"]}},
                    {"name": "stalled", "in": "query", "description": "1: answer {key, stalled: [nodes], _now}, "
                     "the stalled nodes of the subtree to depth (default: as deep as one read goes); wide "
                     "nodes are paged: _children_next (the node's next page, as cursor) and _more (nodes "
                     "below with their own next page); with status, only the stalled nodes in that status",
                     "schema": {"type": "string", "enum": ["0", "1"]}},
                    {"name": "order", "in": "query", "description": "first: children in first-seen order; "
                     "recent: a namespace's trees by last update, newest first (namespaces only: a tree node "
                     "answers 400 bad-order)", "schema": {"type": "string", "enum": ["first", "recent"]}}],
                    "responses": {"200": {"description": "the node", **node}, **_errors(400, 401, 403, 404, 503)}},
                "post": {"summary": "Apply one update", "parameters": [TREE_KEY], "requestBody": {
                    "required": True, "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Update"}}}},
                    "responses": {"200": {"description": "the node's new state", **node},
                                  **_errors(400, 401, 403, 413, 429, 503)}},
                "delete": {"summary": "Delete the subtree", "parameters": [TREE_KEY], "responses": {
                    "204": {"description": "deleted"}, **_errors(400, 401, 403, 404, 503)}}},
            "/status": {
                "get": {"summary": "The top-level namespace", "responses": {
                    "200": {"description": "the namespace", **node}, **_errors(401, 403, 503)}},
                "post": {"summary": "Apply a batch of updates", "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "array", "maxItems": _LIMITS.max_batch_updates,
                                                    "items": BATCH_ITEM}}}},
                    "responses": {"200": {"description": "a result per item, in input order", "content": {
                        "application/json": {"schema": {"type": "object", "required": ["results"], "properties": {
                            "_now": {"type": "integer"}, "results": {"type": "array", "items": {
                                "type": "object", "required": ["ok"], "properties": {
                                    "key": {"type": "string"}, "ok": {"type": "boolean"},
                                    "applied": {"type": "boolean"}, "reason": {"type": "string"},
                                    "node": {"$ref": "#/components/schemas/Node"},
                                    "error": ERROR["properties"]["error"]}}}}}}}},
                        **_errors(400, 401, 413, 429, 503)}}},
            "/auth/ticket": {"post": {"summary": "A short-lived, single-use ticket for /events", "responses": {
                "200": {"description": "the ticket", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["ticket", "expires_in"], "properties": {
                        "ticket": {"type": "string"}, "expires_in": {"type": "integer"}}}}}},
                **_errors(401, 503)}}},
            "/events/{key}": {"get": {"summary": "Server-Sent Events: snapshot, then updates", "parameters": [
                KEY, {"name": "ticket", "in": "query", "schema": {"type": "string"}}], "responses": {
                "200": {"description": "an endless text/event-stream", "content": {"text/event-stream": {}}},
                **_errors(400, 401, 403, 503)}}},
        },
    }
