"""The Tornado server: REST API, CLI and (later) live feeds on top of the engine."""
