"""Experiment families, one module each with its notebook template (`NOTEBOOK`): `trials` (throughput and
energy per mode) and `quality` (seeded fixed-budget training runs), on the shared engine in `training`."""
