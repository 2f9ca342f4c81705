"""Training: one run from a typed config (loop, optimizer, schedules, checkpoints, metrics)."""
