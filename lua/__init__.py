"""The Redis Lua scripts, shipped as package data (see engine/scripts.py for the loader)."""
