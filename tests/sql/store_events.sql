WITH inserted AS (
        INSERT INTO usage_event (tenant, event_id, project, model, api_key_id, occurred_at, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, attributes)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::jsonb[])
        ON CONFLICT (tenant, event_id) DO NOTHING
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
