WITH moved AS (
        DELETE FROM rollup_pending
        WHERE ctid = ANY(ARRAY(SELECT ctid FROM rollup_pending LIMIT $1))
        RETURNING bucket_start, tenant, project, model, api_key_id, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, appended_at
    ),
    upserted_rollup_minute AS (
        INSERT INTO rollup_minute (bucket_start, tenant, project, model, api_key_id, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens)
        SELECT * FROM (
        SELECT bucket_start AS bucket_start, tenant, project, model, api_key_id,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2, 3, 4, 5) AS summed
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (bucket_start, tenant, project, model, api_key_id) DO UPDATE SET requests = rollup_minute.requests + excluded.requests, input_tokens = rollup_minute.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_minute.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_minute.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_minute.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_minute.reasoning_tokens + excluded.reasoning_tokens

    ),
    upserted_rollup_minute_tenant_model AS (
        INSERT INTO rollup_minute_tenant_model (bucket_start, tenant, model, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens)
        SELECT * FROM (
        SELECT bucket_start AS bucket_start, tenant, model,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2, 3) AS summed
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket_start, tenant, model) DO UPDATE SET requests = rollup_minute_tenant_model.requests + excluded.requests, input_tokens = rollup_minute_tenant_model.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_minute_tenant_model.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_minute_tenant_model.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_minute_tenant_model.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_minute_tenant_model.reasoning_tokens + excluded.reasoning_tokens

    ),
    upserted_rollup_minute_model AS (
        INSERT INTO rollup_minute_model (bucket_start, model, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens)
        SELECT * FROM (
        SELECT bucket_start AS bucket_start, model,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2) AS summed
        ORDER BY 1, 2
        ON CONFLICT (bucket_start, model) DO UPDATE SET requests = rollup_minute_model.requests + excluded.requests, input_tokens = rollup_minute_model.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_minute_model.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_minute_model.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_minute_model.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_minute_model.reasoning_tokens + excluded.reasoning_tokens
        RETURNING bucket_start, model, input_tokens + output_tokens AS tokens
    ),
    upserted_rollup_hour AS (
        INSERT INTO rollup_hour (bucket_start, tenant, project, model, api_key_id, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens)
        SELECT * FROM (
        SELECT date_trunc('hour', bucket_start, 'UTC') AS bucket_start, tenant, project, model, api_key_id,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2, 3, 4, 5) AS summed
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (bucket_start, tenant, project, model, api_key_id) DO UPDATE SET requests = rollup_hour.requests + excluded.requests, input_tokens = rollup_hour.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_hour.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_hour.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_hour.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_hour.reasoning_tokens + excluded.reasoning_tokens

    ),
    upserted_rollup_hour_tenant_model AS (
        INSERT INTO rollup_hour_tenant_model (bucket_start, tenant, model, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens)
        SELECT * FROM (
        SELECT date_trunc('hour', bucket_start, 'UTC') AS bucket_start, tenant, model,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2, 3) AS summed
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket_start, tenant, model) DO UPDATE SET requests = rollup_hour_tenant_model.requests + excluded.requests, input_tokens = rollup_hour_tenant_model.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_hour_tenant_model.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_hour_tenant_model.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_hour_tenant_model.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_hour_tenant_model.reasoning_tokens + excluded.reasoning_tokens

    ),
    upserted_rollup_hour_model AS (
        INSERT INTO rollup_hour_model (bucket_start, model, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, peak_minute, peak_minute_tokens)
        SELECT * FROM (
        SELECT sums.*, peaks.peak_minute, peaks.peak_minute_tokens
        FROM (
        SELECT date_trunc('hour', bucket_start, 'UTC') AS bucket_start, model,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2) AS sums
        JOIN (
            SELECT DISTINCT ON (1, 2)
                   date_trunc('hour', minute.bucket_start, 'UTC') AS bucket_start,
                   minute.model,
                   minute.bucket_start AS peak_minute, minute.tokens AS peak_minute_tokens
            FROM upserted_rollup_minute_model AS minute
            ORDER BY 1, 2, minute.tokens DESC, minute.bucket_start
        ) AS peaks USING (bucket_start, model)) AS summed
        ORDER BY 1, 2
        ON CONFLICT (bucket_start, model) DO UPDATE SET requests = rollup_hour_model.requests + excluded.requests, input_tokens = rollup_hour_model.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_hour_model.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_hour_model.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_hour_model.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_hour_model.reasoning_tokens + excluded.reasoning_tokens, peak_minute = CASE WHEN excluded.peak_minute_tokens > rollup_hour_model.peak_minute_tokens OR (excluded.peak_minute_tokens = rollup_hour_model.peak_minute_tokens AND excluded.peak_minute < rollup_hour_model.peak_minute) THEN excluded.peak_minute ELSE rollup_hour_model.peak_minute END, peak_minute_tokens = greatest(rollup_hour_model.peak_minute_tokens, excluded.peak_minute_tokens)

    ),
    upserted_rollup_day AS (
        INSERT INTO rollup_day (bucket_start, tenant, project, model, api_key_id, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens)
        SELECT * FROM (
        SELECT date_trunc('day', bucket_start, 'UTC') AS bucket_start, tenant, project, model, api_key_id,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2, 3, 4, 5) AS summed
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (bucket_start, tenant, project, model, api_key_id) DO UPDATE SET requests = rollup_day.requests + excluded.requests, input_tokens = rollup_day.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_day.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_day.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_day.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_day.reasoning_tokens + excluded.reasoning_tokens

    ),
    upserted_rollup_day_tenant_model AS (
        INSERT INTO rollup_day_tenant_model (bucket_start, tenant, model, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens)
        SELECT * FROM (
        SELECT date_trunc('day', bucket_start, 'UTC') AS bucket_start, tenant, model,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2, 3) AS summed
        ORDER BY 1, 2, 3
        ON CONFLICT (bucket_start, tenant, model) DO UPDATE SET requests = rollup_day_tenant_model.requests + excluded.requests, input_tokens = rollup_day_tenant_model.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_day_tenant_model.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_day_tenant_model.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_day_tenant_model.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_day_tenant_model.reasoning_tokens + excluded.reasoning_tokens

    ),
    upserted_rollup_day_model AS (
        INSERT INTO rollup_day_model (bucket_start, model, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, peak_minute, peak_minute_tokens)
        SELECT * FROM (
        SELECT sums.*, peaks.peak_minute, peaks.peak_minute_tokens
        FROM (
        SELECT date_trunc('day', bucket_start, 'UTC') AS bucket_start, model,
               sum(requests)::int8 AS requests, sum(input_tokens)::int8 AS input_tokens, sum(cached_input_tokens)::int8 AS cached_input_tokens, sum(cache_write_input_tokens)::int8 AS cache_write_input_tokens, sum(output_tokens)::int8 AS output_tokens, sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM moved
        GROUP BY 1, 2) AS sums
        JOIN (
            SELECT DISTINCT ON (1, 2)
                   date_trunc('day', minute.bucket_start, 'UTC') AS bucket_start,
                   minute.model,
                   minute.bucket_start AS peak_minute, minute.tokens AS peak_minute_tokens
            FROM upserted_rollup_minute_model AS minute
            ORDER BY 1, 2, minute.tokens DESC, minute.bucket_start
        ) AS peaks USING (bucket_start, model)) AS summed
        ORDER BY 1, 2
        ON CONFLICT (bucket_start, model) DO UPDATE SET requests = rollup_day_model.requests + excluded.requests, input_tokens = rollup_day_model.input_tokens + excluded.input_tokens, cached_input_tokens = rollup_day_model.cached_input_tokens + excluded.cached_input_tokens, cache_write_input_tokens = rollup_day_model.cache_write_input_tokens + excluded.cache_write_input_tokens, output_tokens = rollup_day_model.output_tokens + excluded.output_tokens, reasoning_tokens = rollup_day_model.reasoning_tokens + excluded.reasoning_tokens, peak_minute = CASE WHEN excluded.peak_minute_tokens > rollup_day_model.peak_minute_tokens OR (excluded.peak_minute_tokens = rollup_day_model.peak_minute_tokens AND excluded.peak_minute < rollup_day_model.peak_minute) THEN excluded.peak_minute ELSE rollup_day_model.peak_minute END, peak_minute_tokens = greatest(rollup_day_model.peak_minute_tokens, excluded.peak_minute_tokens)

    )
    SELECT count(*), extract(epoch FROM clock_timestamp() - min(appended_at))::float8 FROM moved
