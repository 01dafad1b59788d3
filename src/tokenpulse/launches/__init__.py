"""Launches: models going live, and the milestones their usage crosses."""
