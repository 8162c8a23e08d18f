"""Objectives (config group ``objective``): per-sample losses; reduction is the aggregator's job."""
