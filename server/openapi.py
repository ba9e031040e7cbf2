"""The OpenAPI 3 document of the REST API, served at GET /openapi.json."""
from __future__ import annotations

from sca_progress.engine.keys import MAX_KEY_BYTES

KEY = {"name": "key", "in": "path", "required": True,
       "description": "node key: dot-separated segments of [A-Za-z0-9_:@~-]; a key of '_' segments only is a namespace",
       "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_:@~-]{1,64}(\.[A-Za-z0-9_:@~-]{1,64}){0,31}$",
                  "maxLength": MAX_KEY_BYTES}}

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
    "_children": {"type": "array", "items": {"type": "string"}},
    "_children_total": {"type": "integer"}, "_children_next": {"type": "string"},
    "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
    "_now": {"type": "integer"}, "_applied": {"type": "boolean"}, "_reason": {"type": "string"}}}

UPDATE = {"type": "object", "additionalProperties": True, "properties": {
    "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "weight": {"type": ["number", "null"], "minimum": 0, "maximum": 1_000_000},
    "status": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
    "msg": {"type": ["string", "null"]}, "name": {"type": ["string", "null"]},
    "ts": {"type": ["number", "null"], "minimum": 0}}}


def _errors(*codes: int) -> dict:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": ERROR}}} for c in codes}


def openapi() -> dict:
    node = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "sca-progress", "version": "1", "description":
                 "Hierarchical job progress: post updates, read trees. Live feeds: socket.io at /socket.io/ "
                 "and Server-Sent Events at /events/{key} (see the README)."},
        "components": {
            "schemas": {"Node": NODE, "Error": ERROR, "Update": UPDATE},
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
            "/status/{key}": {
                "get": {"summary": "A node and its subtree", "parameters": [
                    KEY,
                    {"name": "depth", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 16}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["first", "recent"]}}],
                    "responses": {"200": {"description": "the node", **node}, **_errors(400, 401, 403, 404, 503)}},
                "post": {"summary": "Apply one update", "parameters": [KEY], "requestBody": {
                    "required": True, "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Update"}}}},
                    "responses": {"200": {"description": "the node's new state", **node},
                                  **_errors(400, 401, 403, 413, 429, 503)}},
                "delete": {"summary": "Delete the subtree", "parameters": [KEY], "responses": {
                    "204": {"description": "deleted"}, **_errors(400, 401, 403, 404, 503)}}},
            "/status": {
                "get": {"summary": "The top-level namespace", "responses": {
                    "200": {"description": "the namespace", **node}, **_errors(401, 403, 503)}},
                "post": {"summary": "Apply a batch of updates", "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "array", "maxItems": 10000, "items": {
                        "allOf": [{"$ref": "#/components/schemas/Update"},
                                  {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}]}}}}},
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
