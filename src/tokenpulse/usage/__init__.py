"""The aggregates: exact totals and time series, read from the rollups."""
