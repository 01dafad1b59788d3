"""OpenAI's Usage and Costs APIs over tokenpulse's aggregates: the shape, parameters and paging
of `/v1/organization/usage/completions` and `/v1/organization/costs`, so that OpenAI's own SDK
reads tokenpulse as it reads OpenAI."""
