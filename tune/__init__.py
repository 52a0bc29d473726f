"""Ray Tune search spaces and the sweep driver (a later issue)."""
