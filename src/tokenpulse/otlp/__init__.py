"""OpenTelemetry: `POST /v1/traces` takes OTLP/HTTP exports and keeps the usage of their GenAI
spans as events."""
