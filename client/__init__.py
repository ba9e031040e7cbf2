"""Clients of the progress service: what job scripts and people at a terminal use."""
