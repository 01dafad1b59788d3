"""Budgets: a running sum watched over a window, and the amounts of it to notify at."""
