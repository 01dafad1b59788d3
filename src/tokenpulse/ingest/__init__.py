"""Ingest: usage events in, validated, stored once, acked after commit."""
