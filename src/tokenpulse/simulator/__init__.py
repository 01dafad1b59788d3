"""The simulator: a seeded launch day of usage events, sent to tokenpulse and checked against it."""
