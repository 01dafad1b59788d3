WITH given AS (
        SELECT DISTINCT ON (tenant, event_id) *
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::jsonb[]) WITH ORDINALITY AS given(tenant, event_id, project, model, api_key_id, occurred_at, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, attributes, position)
        ORDER BY tenant, event_id, position
    ),
    keyed AS (
        INSERT INTO event_key (tenant, event_id, slot, received_at)
        SELECT given.tenant, given.event_id, (SELECT slot FROM dedupe_window), $13::timestamptz
        FROM given
        WHERE NOT EXISTS (
                SELECT FROM event_key AS earlier
                WHERE earlier.slot = (SELECT slot FROM dedupe_window) - 1
                  AND earlier.tenant = given.tenant AND earlier.event_id = given.event_id
                  AND earlier.received_at > $13::timestamptz - $14::interval)
          AND NOT EXISTS (
                SELECT FROM usage_event_legacy AS earlier
                WHERE earlier.tenant = given.tenant AND earlier.event_id = given.event_id
                  AND earlier.received_at > $13::timestamptz - $14::interval)
        -- In key order, whatever join the checks became: two flushes that share keys then
        -- wait for each other's in one order, and never deadlock.
        ORDER BY given.tenant, given.event_id
        ON CONFLICT (tenant, event_id, slot) DO NOTHING
        RETURNING tenant, event_id
    ),
    inserted AS (
        INSERT INTO usage_event (tenant, event_id, project, model, api_key_id, occurred_at, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, attributes, received_at)
        SELECT given.tenant, given.event_id, given.project, given.model, given.api_key_id, given.occurred_at, given.input_tokens, given.cached_input_tokens, given.cache_write_input_tokens, given.output_tokens, given.reasoning_tokens, given.attributes, $13::timestamptz
        FROM given JOIN keyed USING (tenant, event_id)
        -- usage_event_legacy's primary key: an id sent again past the window, whose event
        -- falls before the days, is there already.
        ON CONFLICT DO NOTHING
        RETURNING tenant, event_id, project, model, api_key_id, occurred_at,
                  input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens
    ),
    appended AS (
        INSERT INTO rollup_pending (bucket_start, tenant, project, model, api_key_id, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens)
        SELECT date_trunc('minute', occurred_at, 'UTC'), tenant, project, model,
               coalesce(api_key_id, ''),
               count(*),
               sum(input_tokens)::int8,
               sum(cached_input_tokens)::int8,
               sum(cache_write_input_tokens)::int8,
               sum(output_tokens)::int8,
               sum(reasoning_tokens)::int8
        FROM inserted
        GROUP BY 1, 2, 3, 4, 5
    )
    SELECT tenant, event_id FROM inserted
