SELECT event.occurred_at, event.event_id, event.tenant, row_to_json(line)::text
        FROM usage_event AS event
        CROSS JOIN LATERAL (SELECT event.event_id, to_char(event.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at, event.tenant, event.project, event.model, event.api_key_id, event.input_tokens, event.cached_input_tokens, event.cache_write_input_tokens, event.output_tokens, event.reasoning_tokens, event.attributes) AS line
        WHERE event.model = :model AND event.occurred_at >= :start AND event.occurred_at < :end AND event.tenant = ANY(:tenant_values) AND (event.occurred_at, event.event_id, event.tenant) > (:at, :event_id, :tenant)
        ORDER BY event.occurred_at, event.event_id, event.tenant
        LIMIT :limit
