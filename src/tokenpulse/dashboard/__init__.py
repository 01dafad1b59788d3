"""The dashboard: a page served at `/` that draws what the public REST API answers."""
