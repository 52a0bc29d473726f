"""Training on Ray Train: the launcher (driver side), the worker loop, stages and checkpoints."""
