"""`distillm-bench bench losses` at a tiny size: workers run in their own processes; the JSON and Markdown come out."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.loss_bench import DIVERGENCES, render_markdown

FIELDS = ("loss", "variant", "tokens", "vocab", "hidden", "peak_mib", "seconds")
FIELDS += ("max_rel_err_loss", "max_rel_err_grad")


def run(tmp_path, losses: str, variants: str, reps: int) -> dict:
    argv = ["bench", "losses", "--tokens", "64", "--vocab", "512", "--hidden", "32", "--reps", str(reps)]
    argv += ["--losses", losses, "--variants", variants, "--out", str(tmp_path), "--name", "tiny"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert (tmp_path / "tiny.md").read_text() == render_markdown(result)
    return result


def check_rows(result: dict, losses: list[str], variants: list[str], reps: int) -> None:
    rows = {(r["loss"], r["variant"]): r for r in result["rows"]}
    assert set(rows) == {(loss, v) for loss in losses for v in variants}
    for row in rows.values():
        assert all(field in row for field in FIELDS)
        assert (row["tokens"], row["vocab"], row["hidden"]) == (64, 512, 32)
        assert row["seconds"] > 0 and row["peak_mib"] >= 0 and len(row["seconds_all"]) == reps
    for loss in losses:
        assert rows[(loss, "naive")]["max_rel_err_loss"] == 0.0
        assert rows[(loss, "chunked")]["max_rel_err_loss"] <= 1e-5
        assert rows[(loss, "chunked")]["max_rel_err_grad"] <= 1e-5
        if (loss, "topk8") in rows:  # an approximation, but a close one on this teacher
            assert 0 < rows[(loss, "topk8")]["max_rel_err_loss"] < 0.5
    assert {r["loss"] for r in result["ratios"]} == set(losses)


def test_bench_losses_tiny(tmp_path) -> None:
    result = run(tmp_path, "skew_reverse_kl", "naive,chunked,topk8", reps=1)
    check_rows(result, ["skew_reverse_kl"], ["naive", "chunked", "topk8"], reps=1)
    assert result["config"]["hparams"] == {"skew_reverse_kl": {"alpha": 0.1}}
    assert 0 < result["synthetic_teacher"]["coverage"]["8"] < 1
    assert "malloc" in result["env"] and len(result["env"]["loadavg_before"]) == 3


@pytest.mark.slow
def test_bench_losses_tiny_all_divergences(tmp_path) -> None:
    result = run(tmp_path, ",".join(DIVERGENCES), "naive,chunked,topk8,topk32,topk128", reps=3)
    check_rows(result, list(DIVERGENCES), ["naive", "chunked", "topk8", "topk32", "topk128"], reps=3)


def test_bad_arguments_exit_with_usage_error(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "losses", "--losses", "skl"])
    assert "unknown" in capsys.readouterr().err
