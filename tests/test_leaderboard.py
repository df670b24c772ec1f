"""Leaderboard, cost table, plots and the ``leaderboard`` command, on small hand-made records."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.cli import main
from bench.leaderboard import SCHEMA, RecordError, build_cost_table, build_leaderboard, load_records
from bench.render import render, render_cost
from bench.tables import write_all

INFO = {
    "fidelity/kl": {"category": "fidelity", "higher_is_better": False, "label": "KL(T||S)", "pipeline_check": False},
    "fidelity/rouge_l": {"category": "fidelity", "higher_is_better": True, "label": "ROUGE-L", "pipeline_check": False},
    "ifeval-synth/prompt_acc": {"category": "instruction", "higher_is_better": True, "label": "IFEval_synth acc",
                                "pipeline_check": False},
    "humaneval/pass@1": {"category": "code", "higher_is_better": True, "label": "HumanEval pass@1",
                         "pipeline_check": True},
    "arith/acc": {"category": "math", "higher_is_better": True, "label": "Arith 50% & #", "pipeline_check": False},
}  # fmt: skip

# (role, method, seed, label, kl, rouge, prompt_acc, arith, train wall_s, tokens/s, generation share, peak MiB)
ROWS = [
    ("teacher", None, None, "Teacher", 0.0, 1.0, 0.60, 0.50, None),
    ("student-init", None, None, "Student init", 3.10, 0.10, 0.10, 0.10, None),
    ("method", "distillm", 0, "DistiLLM", 2.50, 0.30, 0.20, 0.20, (100.0, 150.0, 0.40, 7000.0)),
    ("method", "distillm", 1, "DistiLLM", 2.80, 0.32, 0.22, 0.20, (96.0, 160.0, 0.44, 7200.0)),
    ("method", "kd", 0, "KD", 2.70, 0.20, 0.30, 0.15, (60.0, 200.0, 0.0, 6900.0)),
    ("method", "kd", 1, "KD", 2.72, 0.22, 0.30, 0.16, (62.0, 196.0, 0.0, 6900.0)),
    ("method", "seqkd", 0, "SeqKD", 2.80, 0.25, 0.25, 0.10, (70.0, 180.0, 0.10, 6950.0)),
    ("method", "seqkd", 1, "SeqKD", 3.20, 0.26, 0.35, 0.12, (70.0, 180.0, 0.10, 6950.0)),
    ("method", "gkd", 0, "GKD", 2.95, 0.18, 0.12, 0.30, (180.0, 90.0, 0.80, 7100.0)),
]


def metrics(values: dict[str, float], info: dict | None = None) -> dict[str, dict]:
    """Record metrics: each value with its definition."""
    return {k: {"value": v, **(info or INFO)[k]} for k, v in values.items()}


def make_records(train_metrics: dict[str, str] | None = None) -> list[dict]:
    records = []
    for role, method, seed, label, kl, rouge, acc, arith, train in ROWS:
        rec = {
            "schema": SCHEMA,
            "run_id": "test-1a2b3c4d",
            "suite": "test",
            "suite_hash": "1a2b3c4d5e6f7a8b",
            "model": {"role": role, "method": method, "seed": seed, "label": label, "path": "x"},
            "metrics": metrics(
                {
                    "fidelity/kl": kl,
                    "fidelity/rouge_l": rouge,
                    "ifeval-synth/prompt_acc": acc,
                    "humaneval/pass@1": 0.0,
                    "arith/acc": arith,
                }
            ),  # fmt: skip
            "tasks": {"ifeval-synth": {"version": 1}, "humaneval": {"version": 1}, "arith": {"version": 2}},
            "train": None,
        }
        if train is not None:
            wall, tps, share, rss = train
            rec["train"] = {"wall_s": wall, "tokens": int(wall * tps), "tokens_per_s": tps,
                            "generation_s": wall * share, "generation_share": share, "peak_rss_mib": rss,
                            "metrics": (train_metrics or {}).get(f"{method}-s{seed}")}  # fmt: skip
        records.append(rec)
    return records


def write_run(run_dir: Path, records: list[dict]) -> Path:
    (run_dir / "records").mkdir(parents=True)
    for rec in records:
        m = rec["model"]
        name = m["role"] if m["role"] != "method" else f"{m['method']}-s{m['seed']}"
        (run_dir / "records" / f"{name}.json").write_text(json.dumps(rec))
    return run_dir


def row(lb, label):
    return next(r for r in lb.rows if r.label == label)


def test_rows_in_canonical_order_and_mean_ci():
    records = make_records()
    lb = build_leaderboard(records[::-1])  # input order must not matter
    assert [r.label for r in lb.rows] == ["Teacher", "Student init", "KD", "SeqKD", "GKD", "DistiLLM"]
    kd = row(lb, "KD").cells["fidelity/kl"]
    assert kd.mean == pytest.approx(2.71) and kd.std == pytest.approx(0.0141421, rel=1e-4) and kd.n == 2
    assert row(lb, "GKD").cells["fidelity/kl"].std is None  # one seed: a single value
    md = render(lb, "md")
    assert "2.710 ± 0.127" in md  # 95% CI half-width: t(0.975, 1) * 0.01414 / sqrt(2)
    assert "| GKD " in md and "2.950 ±" not in md
    # the average: per seed, the mean of the higher-is-better task columns without fidelity and pipeline checks
    avg = row(lb, "KD").cells["average"]
    assert avg.values == pytest.approx([(0.30 + 0.15) / 2, (0.30 + 0.16) / 2])
    assert "excluding fidelity and pipeline checks" in md


def test_bold_marks_true_best_with_lower_is_better_and_ties():
    lb = build_leaderboard(make_records())
    # lower is better: DistiLLM (2.65) beats KD (2.71); the teacher's 0.0 is excluded
    assert [r.label for r in lb.rows if "fidelity/kl" in r.best] == ["DistiLLM"]
    # higher is better: DistiLLM ROUGE-L (0.31); the teacher's 1.0 is excluded
    assert [r.label for r in lb.rows if "fidelity/rouge_l" in r.best] == ["DistiLLM"]
    # a tie: KD and SeqKD both average 0.30
    assert [r.label for r in lb.rows if "ifeval-synth/prompt_acc" in r.best] == ["KD", "SeqKD"]
    assert [r.label for r in lb.rows if "arith/acc" in r.best] == ["GKD"]
    # pipeline checks are not compared (everyone scores 0)
    assert not any("humaneval/pass@1" in r.best for r in lb.rows)
    md = render(lb, "md")
    distillm_line = next(line for line in md.splitlines() if line.startswith("| DistiLLM"))
    assert "**2.650 ± 1.906**" in distillm_line
    assert "**0.300 ± 0.000**" in md and "**0.300 ± 0.635**" in md  # KD and SeqKD tie
    teacher_line = next(line for line in md.splitlines() if line.startswith("| Teacher"))
    assert "**" not in teacher_line
    # a column where every student ties has no best
    records = make_records()
    for rec in records:
        rec["metrics"]["arith/acc"]["value"] = 0.0 if rec["model"]["role"] != "teacher" else 0.5
    assert not any("arith/acc" in r.best for r in build_leaderboard(records).rows)


def test_delta_and_dagger():
    lb = build_leaderboard(make_records())
    assert lb.headline == "fidelity/kl"
    assert row(lb, "Student init").delta is None
    kd, seqkd, gkd, distillm = (row(lb, n) for n in ("KD", "SeqKD", "GKD", "DistiLLM"))
    # the init is one fixed model: the CI of the change is the row's own 95% CI (t(0.975, 1) = 12.706, n = 2)
    assert kd.delta == pytest.approx(-0.39) and kd.delta_significant  # 0.39 > 12.706 * 0.01414 / sqrt(2) = 0.127
    assert kd.delta_ci95 == pytest.approx(0.127062, rel=1e-4)
    assert distillm.delta == pytest.approx(-0.45) and not distillm.delta_significant  # 0.45 < 1.906
    assert seqkd.delta == pytest.approx(-0.10) and not seqkd.delta_significant  # 0.10 < 2.541
    assert gkd.delta == pytest.approx(-0.15) and not gkd.delta_significant  # one seed: never marked
    assert gkd.delta_ci95 is None
    md = render(lb, "md")
    assert "-0.390†" in md and "-0.450 " in md and "-0.100 " in md and "-0.150 " in md and "-0.150†" not in md
    assert "† where the 95% CI of the change" in md


def test_pairwise_separation_uses_the_paired_ci():
    from bench.separation import pairs, render_md

    lb = build_leaderboard(make_records())
    found = {(p.a, p.b): p for p in pairs(lb)}
    # KD vs DistiLLM on seeds 0, 1: differences 0.20 and -0.08, mean 0.06, CI 12.706 * 0.198 / sqrt(2) = 1.779
    kd_distillm = found[("KD", "DistiLLM")]
    assert kd_distillm.rule == "paired" and kd_distillm.n == 2
    assert kd_distillm.diff == pytest.approx(0.06) and kd_distillm.half == pytest.approx(1.7789, abs=1e-3)
    assert not kd_distillm.separates and kd_distillm.mark == ""
    # the single-seed init is one fixed model: KD's per-seed values minus its value give the CI
    init_kd = found[("Student init", "KD")]
    assert init_kd.rule == "fixed" and init_kd.diff == pytest.approx(0.39) and init_kd.separates
    assert init_kd.mark == "†"
    assert not found[("KD", "SeqKD")].separates  # -0.29 +- 2.414
    # GKD has seed 0 only: fewer than 2 shared seeds, the old 2 x std heuristic, marked ‡ (0.24 > 2 * 0.014)
    kd_gkd = found[("KD", "GKD")]
    assert kd_gkd.rule == "spread" and kd_gkd.diff == pytest.approx(-0.24) and kd_gkd.mark == "‡"
    assert ("Teacher", "KD") not in found and ("KD", "Teacher") not in found
    md = render_md(lb)
    assert "| KD | -0.390† |" in md and "Pairwise separation** on KL(T||S) (lower is better)" in md
    assert "| GKD | -0.150 | +0.240‡ |" in md and "fewer than 2 shared seeds" in md.lower()


def test_headline_falls_back_to_average_without_kl():
    records = make_records()
    for rec in records:
        del rec["metrics"]["fidelity/kl"]
    lb = build_leaderboard(records)
    assert lb.headline == "average"
    assert row(lb, "KD").delta == pytest.approx((0.30 + 0.155) / 2 - 0.10)


def test_pipeline_check_header_and_markdown_escaping():
    md = render(build_leaderboard(make_records()), "md")
    header = md.splitlines()[2]
    assert "HumanEval pass@1\\* ↑" in header
    assert "KL(T\\|\\|S) ↓" in header  # a '|' in a label must not split the Markdown table
    assert len({line.count(" | ") for line in md.splitlines() if line.startswith("| ")}) == 1
    assert "pipeline check: the teacher scores ≈ 0, no method difference is measurable" in md


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "tasks",
            {"ifeval-synth": {"version": 2}, "humaneval": {"version": 1}, "arith": {"version": 2}},
            "tasks['ifeval-synth'].version (1 vs 2)",
        ),
        ("suite_hash", "ffffffffffffffff", "suite_hash"),
        ("schema", "distillm-bench/record/v0", "schema"),
    ],
)
def test_inconsistent_records_are_refused(field, value, message):
    records = make_records()
    records[-1][field] = value
    records[-1]["_source"] = "runB/records/gkd-s0.json"
    records[0]["_source"] = "runA/records/teacher.json"
    with pytest.raises(RecordError, match="never mixed|is not") as err:
        build_leaderboard(records)
    text = str(err.value)
    assert message in text and "gkd-s0.json" in text and "\n" not in text
    if field != "schema":
        assert "teacher.json" in text  # names both records


def test_duplicate_records_are_refused():
    records = make_records()
    records.append(json.loads(json.dumps(records[4])))
    with pytest.raises(RecordError, match=r"duplicates of \(role, method, seed\) \('method', 'kd', 0\)"):
        build_leaderboard(records)


def test_csv_and_json_round_trip_the_numbers():
    records = make_records()
    lb = build_leaderboard(records)
    rows = list(csv.DictReader(io.StringIO(render(lb, "csv"))))
    assert [r["model"] for r in rows] == [r.label for r in lb.rows]
    for out, lrow in zip(rows, lb.rows, strict=True):
        for key, stat in lrow.cells.items():
            assert (float(out[f"{key}/mean"]) if out[f"{key}/mean"] else None) == stat.mean
            assert (float(out[f"{key}/std"]) if out[f"{key}/std"] else None) == stat.std
            assert (float(out[f"{key}/ci95"]) if out[f"{key}/ci95"] else None) == stat.ci95
        assert (float(out["delta"]) if out["delta"] else None) == lrow.delta
        assert out["delta_significant"] == str(int(lrow.delta_significant))
    data = json.loads(render(lb, "json"))
    kd = next(r for r in data["rows"] if r["label"] == "KD")
    assert kd["cells"]["fidelity/kl"]["values"] == [2.70, 2.72]
    assert kd["cells"]["fidelity/kl"]["mean"] == row(lb, "KD").cells["fidelity/kl"].mean
    assert kd["cells"]["fidelity/kl"]["ci95"] == row(lb, "KD").cells["fidelity/kl"].ci95
    assert kd["best"] == ["ifeval-synth/prompt_acc", "average", "gap_recovered"] and kd["seeds"] == [0, 1]
    assert [c["key"] for c in data["columns"]][-2:] == ["average", "gap_recovered"]


def test_latex_structure_and_escaping():
    tex = render(build_leaderboard(make_records()), "latex")
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\multicolumn{2}{c}{Fidelity}", r"\cmidrule(lr){6-7}",
                   r"\begin{table}", r"\caption{", r"\footnotesize", r"Arith 50\% \& \#", r"IFEval\_synth",
                   r"\textbf{2.650 $\pm$ 1.906}", r"$^\dagger$"):  # fmt: skip
        assert needle in tex, needle
    assert tex.isascii()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
@pytest.mark.parametrize("preamble", ["\\usepackage{booktabs}", "\\usepackage{booktabs}\\usepackage{graphicx}"])
def test_latex_compiles(tmp_path, preamble):
    records = make_records()
    body = render(build_leaderboard(records), "latex") + render_cost(build_cost_table(records), "latex")
    doc = f"\\documentclass{{article}}\n{preamble}\n\\begin{{document}}\n{body}\\end{{document}}\n"
    (tmp_path / "doc.tex").write_text(doc)
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0
    if "graphicx" in preamble:  # scaled to the line width
        assert "Overfull \\hbox" not in (tmp_path / "doc.log").read_text()


def test_cost_table_ratios_to_kd():
    cost = build_cost_table(make_records())
    assert [r.label for r in cost.rows] == ["KD", "SeqKD", "GKD", "DistiLLM"]  # methods only
    assert cost.reference == "KD"
    kd, distillm = cost.rows[0], cost.rows[-1]
    assert kd.ratios["wall_s"] == pytest.approx(1.0)
    assert distillm.cells["wall_s"].mean == pytest.approx(98.0)
    assert distillm.ratios["wall_s"] == pytest.approx(98.0 / 61.0)
    assert distillm.ratios["tokens_per_s"] == pytest.approx(155.0 / 198.0)
    assert distillm.ratios["generation_share"] is None  # KD generates nothing: no ratio
    md = render_cost(cost, "md")
    assert "1.00×" in md and "1.61×" in md and "42%" in md
    rows = list(csv.DictReader(io.StringIO(render_cost(cost, "csv"))))
    assert float(rows[-1]["wall_s/ratio_to_kd"]) == distillm.ratios["wall_s"]
    without_kd = [r for r in make_records() if r["model"]["method"] != "kd"]
    assert build_cost_table(without_kd).reference is None
    assert "×" not in render_cost(build_cost_table(without_kd), "md").split("\n\n")[1]


def test_write_all_and_load_records(tmp_path):
    run = write_run(tmp_path / "run", make_records())
    records = load_records([run])
    assert len(records) == len(ROWS) and all(r.source.endswith(".json") for r in records)
    written = write_all(run)
    names = {"leaderboard.md", "leaderboard.tex", "leaderboard.csv", "leaderboard.json", "cost.md", "cost.tex",
             "cost.csv", "paired.md", "paired.csv", "paired.json", "separation.md"}  # fmt: skip
    assert {p.name for p in written} == names
    assert all((run / n).stat().st_size > 0 for n in names)
    with pytest.raises(RecordError, match="no records under"):
        load_records([tmp_path / "empty"])


def _metrics_rows(method: str, seed: int) -> list[dict]:
    rows = []
    for step in range(1, 6):
        r = {"step": step, "epoch": 0, "loss": 2.0 / step + seed * 0.1, "loss_terms": ["loss"]}
        if method == "distillm2":
            r.update(skl_teacher_resp=1.0 / step, srkl_student_resp=1.0 / step)
            r["loss_terms"] = ["skl_teacher_resp", "srkl_student_resp"]
        r.update(lr=1e-4, tokens=100, tokens_per_s=50.0)
        if method == "distillm2":
            r.update(beta=0.5 + 0.1 * step, alpha=[0.1, 0.05], alpha_active=True)
        if method == "distillm":
            r.update(phi=1.0 - 0.1 * step, on_policy_fraction=0.2 * step, fresh_fraction=0.1, buffer_size=8.0)
        rows.append(r)
    return rows


def test_plots_are_written(tmp_path):
    from bench.plots import _loss_terms, write_plots

    run = tmp_path / "results" / "test-run"
    paths = {}
    for method, seed in (("kd", 0), ("kd", 1), ("distillm", 0), ("distillm", 1), ("seqkd", 0), ("gkd", 0)):
        metrics = run / "stages" / f"train-{method}-s{seed}" / "metrics.jsonl"
        metrics.parent.mkdir(parents=True)
        metrics.write_text("".join(json.dumps(r) + "\n" for r in _metrics_rows(method, seed)) + '{"step": 6, "lo')
        paths[f"{method}-s{seed}"] = f"results/test-run/stages/train-{method}-s{seed}/metrics.jsonl"  # repo-relative
    records = make_records(paths)
    records[-1]["train"]["metrics"] = str(run / "stages" / "missing.jsonl")  # a missing file is skipped
    write_run(run, records)
    assert _loss_terms(_metrics_rows("distillm2", 0)) == ["skl_teacher_resp", "srkl_student_resp"]
    assert _loss_terms(_metrics_rows("distillm", 0)) == []  # sampler stats (buffer_size ...) are not terms
    written = write_plots(run, load_records([run]))
    assert [p.name for p in written] == ["training_curves.png", "leaderboard.png"]
    for p in written:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_cli_renders_from_run_dir(tmp_path, capsys):
    run = write_run(tmp_path / "run", make_records())
    assert main(["leaderboard", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**Leaderboard**") and "2.710 ± 0.127" in out
    assert main(["leaderboard", str(run), "--format", "csv"]) == 0
    assert next(csv.reader(io.StringIO(capsys.readouterr().out)))[0] == "model"
    assert main(["leaderboard", str(run), "--format", "latex", "--table", "cost"]) == 0
    assert r"\label{tab:cost}" in capsys.readouterr().out
    out_dir = tmp_path / "out"
    assert main(["leaderboard", str(run), "--format", "json", "--out", str(out_dir)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["suite"] == "test"
    assert (out_dir / "leaderboard.tex").is_file() and (out_dir / "cost.csv").is_file()
    assert (out_dir / "leaderboard.png").is_file()


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no records under" in err
    records = make_records()
    records[3]["tasks"]["arith"] = {"version": 3}
    run = write_run(tmp_path / "run", records)
    assert main(["leaderboard", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disagree on tasks['arith'].version (2 vs 3)" in err
    # two run dirs with different suite configs are never mixed
    other = make_records()
    for rec in other:
        rec["suite_hash"] = "ffffffffffffffff"
    run_b = write_run(tmp_path / "run_b", other)
    good = write_run(tmp_path / "run_a", make_records()[:2])
    assert main(["leaderboard", str(good), str(run_b)]) == 2
    assert "disagree on suite_hash" in capsys.readouterr().err


def test_run_ends_with_the_task_average_of_every_row():
    from bench.cmd_run import _headline

    path = Path(__file__).resolve().parent.parent / "results" / "benchmarks" / "world-run-120k" / "leaderboard.json"
    text = _headline(path)
    assert "| SFT " in text and "0.240 ± 0.037" in text and "| Teacher " in text and "leaderboard.md" in text
    assert _headline(path.parent / "missing.json") == ""


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.pop("tokens_per_s"), "train.tokens_per_s is missing"),
        (lambda t: t.update(tokens_per_sec=t.pop("tokens_per_s")), "train.tokens_per_s is missing"),  # renamed
        (lambda t: t.update(wall_s="fast"), "train.wall_s = 'fast' is not a finite number"),
        (lambda t: t.update(peak_rss_mib=float("nan")), "train.peak_rss_mib = nan"),
    ],
)
def test_a_records_training_cost_is_typed_a_bad_field_is_an_error_not_a_dash(edit, needle):
    """The cost once travelled as a dict read by string keys: a renamed key showed "–" in the cost table."""
    records = make_records()
    edit(records[2]["train"])
    with pytest.raises(RecordError, match=needle) as err:
        build_cost_table(records)
    assert "method/distillm/seed=0" in str(err.value)
    with pytest.raises(RecordError, match=needle):
        build_leaderboard(records)  # every table validates its records the same way


def test_train_cost_round_trips_and_reads_older_records():
    from bench.record import Record, TrainCost

    summary = {"method": "kd", "steps": 3, "wall_s": 2.5, "tokens": 300, "tokens_per_s": 120.0, "generation_s": 0.0,
               "generation_share": 0.0, "peak_rss_mib": 512.0, "metrics": "m.jsonl", "setup_generation_s": 0.0}  # fmt: skip
    cost = TrainCost.from_summary(summary)
    assert TrainCost.from_dict(cost.as_dict(), "x") == cost and cost.tokens == 300 and cost.metrics == "m.jsonl"
    old = make_records()  # records as the eval stage wrote them before the type (no setup_generation_s)
    assert Record.from_dict(old[0]).train is None and Record.from_dict(old[2]).train.setup_generation_s is None


def _as_version_1(rec: dict) -> dict:
    """The record as the eval stage wrote it before the one schema: plain metric values, metric_info, task_versions."""
    old = {k: v for k, v in rec.items() if k not in ("metrics", "tasks")}
    old["schema"] = "distillm-bench/record/v1"
    old["metrics"] = {k: m["value"] for k, m in rec["metrics"].items()}
    old["metric_info"] = {k: {f: v for f, v in m.items() if f != "value"} for k, m in rec["metrics"].items()}
    old["task_versions"] = {t: e["version"] for t, e in rec["tasks"].items()}
    return old


def test_a_record_round_trips_and_a_version_1_record_reads_as_the_same_record(tmp_path):
    from bench.record import Record

    records = make_records()
    for i, d in enumerate(records):
        rec = Record.from_dict(d)
        path = rec.write(tmp_path / f"{i}.json")
        again = Record.read(path)
        assert again == rec and again.source == str(path) and json.loads(path.read_text())["schema"] == SCHEMA
        assert Record.from_dict(_as_version_1(d)) == rec  # upgraded field by field
    old = [_as_version_1(d) for d in records]
    for fmt in ("md", "csv", "json"):
        assert render(build_leaderboard(old), fmt) == render(build_leaderboard(records), fmt)
    assert render_cost(build_cost_table(old), "md") == render_cost(build_cost_table(records), "md")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda r: r["metrics"]["arith/acc"].pop("higher_is_better"),
            "metrics['arith/acc'].higher_is_better is missing",
        ),
        (
            lambda r: r["metrics"]["arith/acc"].update(value="0.3"),
            "metrics['arith/acc'].value = '0.3' is not a number",
        ),
        (lambda r: r["metrics"]["arith/acc"].update(primary="yes"), "metrics['arith/acc'].primary = 'yes' is not"),
        (lambda r: r["tasks"]["arith"].pop("version"), "tasks['arith'].version is missing"),
        (lambda r: r.update(metric_info={}), "unknown field 'metric_info'"),
        (lambda r: r["model"].update(role="student"), "model.role must be one of"),
        (lambda r: r.pop("train"), "a method record needs train"),
    ],
)
def test_a_malformed_record_is_refused_in_one_line_naming_the_field(edit, needle, tmp_path):
    records = make_records()
    edit(records[2])
    run = write_run(tmp_path / "run", records)
    m = records[2]["model"]
    name = (
        f"{m['method']}-s{m['seed']}.json" if m["role"] == "method" else f"{m['role']}.json"
    )  # as write_run names it
    with pytest.raises(RecordError, match=re.escape(needle)) as err:
        load_records([run])
    assert f"records/{name}:" in str(err.value) and "\n" not in str(err.value)


def test_an_eval_engine_record_is_a_record_the_leaderboard_refuses_to_mix(tmp_path):
    from bench.record import ModelRef, Record

    rec = Record.from_dict(make_records()[0])
    engine = Record(run_id="eval-1", model=ModelRef(role="model", path="x"), metrics=rec.metrics, tasks=rec.tasks)
    engine.write(tmp_path / "record.json")  # the eval engine's record validates as the same schema
    with pytest.raises(RecordError, match="model.role must be one of teacher, student-init, method"):
        build_leaderboard([rec, engine])


def test_a_real_version_1_record_reads_and_tabulates():
    """A record as the eval stage wrote it before the one schema (results/smollm2-72f0849a, KD seed 0)."""
    from bench.record import Record

    path = Path(__file__).resolve().parent / "fixtures" / "record_v1_smollm2_kd.json"
    old = json.loads(path.read_text())
    rec = Record.read(path)
    assert old["schema"] == "distillm-bench/record/v1" and rec.model.method == "kd" and rec.model.seed == 0
    assert {k: m.value for k, m in rec.metrics.items()} == old["metrics"]  # every value kept
    for key, info in old["metric_info"].items():  # every definition kept
        m = rec.metrics[key]
        assert (m.category, m.higher_is_better, m.label) == (info["category"], info["higher_is_better"], info["label"])
        assert m.primary == info.get("primary", True) and m.pipeline_check == info.get("pipeline_check", False)
    assert {t: e.version for t, e in rec.tasks.items()} == old["task_versions"]
    assert rec.train is not None and rec.train.tokens == old["train"]["tokens"]
    lb = build_leaderboard([rec])
    assert [r.label for r in lb.rows] == ["KD"] and lb.suite == old["suite"]
