"""Evaluating models on tasks: the harness (`harness`), text <-> ids for any tokenizer (`codec`), and the
tasks a run is evaluated on while it trains (`during`)."""
