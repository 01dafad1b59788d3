"""The rollup model: grains and cubes, the fold of pending deltas into them, and the sums that
every aggregate reads from rollups and pending deltas together."""
