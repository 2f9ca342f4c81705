"""Ladders: plan IsoFLOP grids from compute budgets, run them resumably, store results in SQLite."""
