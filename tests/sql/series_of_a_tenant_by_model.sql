SELECT rows.bucket, rows.model, CAST(sum(rows.requests) AS BIGINT) AS sum_1, CAST(sum(rows.input_tokens) AS BIGINT) AS sum_2, CAST(sum(rows.cached_input_tokens) AS BIGINT) AS sum_3, CAST(sum(rows.output_tokens) AS BIGINT) AS sum_4, CAST(sum(rows.reasoning_tokens) AS BIGINT) AS sum_5, CAST(sum(rows.input_tokens) + sum(rows.output_tokens) AS BIGINT) AS anon_1
FROM (SELECT rollup_hour_tenant_model.bucket_start AS bucket, rollup_hour_tenant_model.model AS model, rollup_hour_tenant_model.requests AS requests, rollup_hour_tenant_model.input_tokens AS input_tokens, rollup_hour_tenant_model.cached_input_tokens AS cached_input_tokens, rollup_hour_tenant_model.output_tokens AS output_tokens, rollup_hour_tenant_model.reasoning_tokens AS reasoning_tokens
FROM (SELECT rollup_hour_tenant_model.bucket_start AS bucket_start, rollup_hour_tenant_model.tenant AS tenant, rollup_hour_tenant_model.model AS model, rollup_hour_tenant_model.requests AS requests, rollup_hour_tenant_model.input_tokens AS input_tokens, rollup_hour_tenant_model.cached_input_tokens AS cached_input_tokens, rollup_hour_tenant_model.output_tokens AS output_tokens, rollup_hour_tenant_model.reasoning_tokens AS reasoning_tokens
FROM rollup_hour_tenant_model
UNION ALL
SELECT date_trunc('hour', rollup_pending.bucket_start, 'UTC') AS bucket_start, rollup_pending.tenant AS tenant, rollup_pending.model AS model, rollup_pending.requests AS requests, rollup_pending.input_tokens AS input_tokens, rollup_pending.cached_input_tokens AS cached_input_tokens, rollup_pending.output_tokens AS output_tokens, rollup_pending.reasoning_tokens AS reasoning_tokens
FROM rollup_pending
WHERE rollup_pending.bucket_start >= %(start_0)s::TIMESTAMP WITH TIME ZONE AND rollup_pending.bucket_start < %(end_0)s::TIMESTAMP WITH TIME ZONE) AS rollup_hour_tenant_model
WHERE rollup_hour_tenant_model.bucket_start >= %(start_0)s::TIMESTAMP WITH TIME ZONE AND rollup_hour_tenant_model.bucket_start < %(end_0)s::TIMESTAMP WITH TIME ZONE AND rollup_hour_tenant_model.tenant IN (__[POSTCOMPILE_tenant_values])) AS rows GROUP BY rows.bucket, rows.model
HAVING count(*) > %(count_1)s::INTEGER
 LIMIT %(most_rows)s::INTEGER
