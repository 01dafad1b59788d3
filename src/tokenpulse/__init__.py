"""tokenpulse: durable, exactly-once token-usage telemetry on PostgreSQL."""
