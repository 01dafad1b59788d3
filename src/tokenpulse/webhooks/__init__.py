"""Webhooks: where notifications go, signed by the Standard Webhooks scheme, and their delivery."""
