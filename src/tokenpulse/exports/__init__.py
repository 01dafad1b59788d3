"""Stored events read back as they were sent: `GET /v1/events/export` and `tokenpulse export`."""
