"""`POST /v1/integrations/litellm`: what LiteLLM's generic API logger sends, as usage events."""
