SELECT candidates.bucket_start, candidates.total
FROM (SELECT rollup_minute_model.bucket_start AS bucket_start, CAST(sum(rollup_minute_model.input_tokens + rollup_minute_model.output_tokens) AS BIGINT) AS total
FROM (SELECT rollup_minute_model.bucket_start AS bucket_start, rollup_minute_model.model AS model, rollup_minute_model.requests AS requests, rollup_minute_model.input_tokens AS input_tokens, rollup_minute_model.cached_input_tokens AS cached_input_tokens, rollup_minute_model.cache_write_input_tokens AS cache_write_input_tokens, rollup_minute_model.output_tokens AS output_tokens, rollup_minute_model.reasoning_tokens AS reasoning_tokens
FROM rollup_minute_model
UNION ALL
SELECT rollup_pending.bucket_start AS bucket_start, rollup_pending.model AS model, rollup_pending.requests AS requests, rollup_pending.input_tokens AS input_tokens, rollup_pending.cached_input_tokens AS cached_input_tokens, rollup_pending.cache_write_input_tokens AS cache_write_input_tokens, rollup_pending.output_tokens AS output_tokens, rollup_pending.reasoning_tokens AS reasoning_tokens
FROM rollup_pending
WHERE rollup_pending.bucket_start >= %(start_0)s::TIMESTAMP WITH TIME ZONE AND rollup_pending.bucket_start < %(end_0)s::TIMESTAMP WITH TIME ZONE) AS rollup_minute_model
WHERE rollup_minute_model.bucket_start >= %(start_0)s::TIMESTAMP WITH TIME ZONE AND rollup_minute_model.bucket_start < %(end_0)s::TIMESTAMP WITH TIME ZONE AND rollup_minute_model.model IN (__[POSTCOMPILE_model_values]) GROUP BY rollup_minute_model.bucket_start
UNION ALL
SELECT rollup_hour_model.peak_minute AS bucket_start, rollup_hour_model.peak_minute_tokens AS total
FROM rollup_hour_model
WHERE rollup_hour_model.bucket_start >= %(start_1)s::TIMESTAMP WITH TIME ZONE AND rollup_hour_model.bucket_start < %(end_1)s::TIMESTAMP WITH TIME ZONE AND rollup_hour_model.model IN (__[POSTCOMPILE_model_values])
UNION ALL
SELECT rollup_minute_model.bucket_start AS bucket_start, CAST(sum(rollup_minute_model.input_tokens + rollup_minute_model.output_tokens) AS BIGINT) AS total
FROM (SELECT rollup_minute_model.bucket_start AS bucket_start, rollup_minute_model.model AS model, rollup_minute_model.requests AS requests, rollup_minute_model.input_tokens AS input_tokens, rollup_minute_model.cached_input_tokens AS cached_input_tokens, rollup_minute_model.cache_write_input_tokens AS cache_write_input_tokens, rollup_minute_model.output_tokens AS output_tokens, rollup_minute_model.reasoning_tokens AS reasoning_tokens
FROM rollup_minute_model
UNION ALL
SELECT rollup_pending.bucket_start AS bucket_start, rollup_pending.model AS model, rollup_pending.requests AS requests, rollup_pending.input_tokens AS input_tokens, rollup_pending.cached_input_tokens AS cached_input_tokens, rollup_pending.cache_write_input_tokens AS cache_write_input_tokens, rollup_pending.output_tokens AS output_tokens, rollup_pending.reasoning_tokens AS reasoning_tokens
FROM rollup_pending
WHERE rollup_pending.bucket_start >= %(start_1)s::TIMESTAMP WITH TIME ZONE AND rollup_pending.bucket_start < %(end_1)s::TIMESTAMP WITH TIME ZONE) AS rollup_minute_model
WHERE rollup_minute_model.bucket_start >= %(start_1)s::TIMESTAMP WITH TIME ZONE AND rollup_minute_model.bucket_start < %(end_1)s::TIMESTAMP WITH TIME ZONE AND rollup_minute_model.model IN (__[POSTCOMPILE_model_values]) AND rollup_minute_model.bucket_start IN (SELECT rollup_pending.bucket_start
FROM rollup_pending
WHERE rollup_pending.bucket_start >= %(start_1)s::TIMESTAMP WITH TIME ZONE AND rollup_pending.bucket_start < %(end_1)s::TIMESTAMP WITH TIME ZONE AND rollup_pending.model IN (__[POSTCOMPILE_model_values])) GROUP BY rollup_minute_model.bucket_start
UNION ALL
SELECT rollup_day_model.peak_minute AS bucket_start, rollup_day_model.peak_minute_tokens AS total
FROM rollup_day_model
WHERE rollup_day_model.bucket_start >= %(start_2)s::TIMESTAMP WITH TIME ZONE AND rollup_day_model.bucket_start < %(end_2)s::TIMESTAMP WITH TIME ZONE AND rollup_day_model.model IN (__[POSTCOMPILE_model_values])
UNION ALL
SELECT rollup_minute_model.bucket_start AS bucket_start, CAST(sum(rollup_minute_model.input_tokens + rollup_minute_model.output_tokens) AS BIGINT) AS total
FROM (SELECT rollup_minute_model.bucket_start AS bucket_start, rollup_minute_model.model AS model, rollup_minute_model.requests AS requests, rollup_minute_model.input_tokens AS input_tokens, rollup_minute_model.cached_input_tokens AS cached_input_tokens, rollup_minute_model.cache_write_input_tokens AS cache_write_input_tokens, rollup_minute_model.output_tokens AS output_tokens, rollup_minute_model.reasoning_tokens AS reasoning_tokens
FROM rollup_minute_model
UNION ALL
SELECT rollup_pending.bucket_start AS bucket_start, rollup_pending.model AS model, rollup_pending.requests AS requests, rollup_pending.input_tokens AS input_tokens, rollup_pending.cached_input_tokens AS cached_input_tokens, rollup_pending.cache_write_input_tokens AS cache_write_input_tokens, rollup_pending.output_tokens AS output_tokens, rollup_pending.reasoning_tokens AS reasoning_tokens
FROM rollup_pending
WHERE rollup_pending.bucket_start >= %(start_2)s::TIMESTAMP WITH TIME ZONE AND rollup_pending.bucket_start < %(end_2)s::TIMESTAMP WITH TIME ZONE) AS rollup_minute_model
WHERE rollup_minute_model.bucket_start >= %(start_2)s::TIMESTAMP WITH TIME ZONE AND rollup_minute_model.bucket_start < %(end_2)s::TIMESTAMP WITH TIME ZONE AND rollup_minute_model.model IN (__[POSTCOMPILE_model_values]) AND rollup_minute_model.bucket_start IN (SELECT rollup_pending.bucket_start
FROM rollup_pending
WHERE rollup_pending.bucket_start >= %(start_2)s::TIMESTAMP WITH TIME ZONE AND rollup_pending.bucket_start < %(end_2)s::TIMESTAMP WITH TIME ZONE AND rollup_pending.model IN (__[POSTCOMPILE_model_values])) GROUP BY rollup_minute_model.bucket_start) AS candidates ORDER BY candidates.total DESC, candidates.bucket_start
 LIMIT %(param_1)s::INTEGER
