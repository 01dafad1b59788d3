"""How the raw events are kept: a partition a day, and the keys that store each event once."""
