"""The trainer throughput benchmark writes its JSON and table (a tiny run; the real one is `bench trainer`)."""

from __future__ import annotations

import json

import pytest

from bench.trainer_bench import run


@pytest.mark.slow
def test_trainer_bench_tiny(tmp_path):
    md = run("tiny-llama", steps=2, batch=4, out_dir=tmp_path, methods=["kd", "imitkd"])
    data = json.loads((tmp_path / "trainer.json").read_text())
    assert [r["method"] for r in data["rows"]] == ["kd", "imitkd"]
    for r in data["rows"]:
        assert r["steps"] == 2 and r["tokens"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss_mib"] > 0
    assert data["rows"][0]["wall_vs_kd"] == 1.0 and data["rows"][1]["generation_share"] > 0
    assert "| imitkd |" in md.read_text()
