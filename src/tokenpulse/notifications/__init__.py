"""Notifications: crossings found behind ingest, kept in an outbox until delivered."""
