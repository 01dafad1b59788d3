"""Prices per million tokens of each model, in versions effective from a minute."""
