"""Orchestration: the `distillm-bench` CLI, benchmarks and leaderboards."""
