"""Confidence intervals, paired comparisons, gap recovered, column/row order and learning curves, on hand-made
three-seed records whose numbers are checked against hand computations."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics

import pytest

from bench.cli import main
from bench.leaderboard import AVERAGE, GAP, SCHEMA, Stat, build_cost_table, build_leaderboard, ci_half, t_crit, t_table
from bench.render import render, render_cost
from bench.separation import build_paired, render_paired
from bench.tables import write_all

T2 = 4.302652729749464  # t_{0.975, 2}: three seeds


def _info(category, label, higher=True, primary=True, pipeline=False):
    return {"category": category, "higher_is_better": higher, "label": label, "pipeline_check": pipeline,
            "primary": primary}  # fmt: skip


# metric_info in a scrambled order: the table must reorder it
INFO = {
    "arith/acc": _info("math", "Arith acc"),
    "fidelity/rouge_l": _info("fidelity", "ROUGE-L"),
    "caption-synth/rougeL": _info("caption", "Caption R-L"),
    "ifeval-synth/prompt_acc": _info("instruction", "IFEval prompt"),
    "fidelity/kl": _info("fidelity", "KL(T||S)", higher=False),
    "humaneval/pass@1": _info("code", "HumanEval"),
    "strings/exact_match": _info("strings", "Strings EM"),
    "ifeval-synth/inst_acc": _info("instruction", "IFEval inst", primary=False),
    "gsm-synth/acc": _info("math", "GSM acc"),
    "fidelity/nll": _info("fidelity", "NLL", higher=False),
}
COLUMN_ORDER = [
    "ifeval-synth/prompt_acc", "ifeval-synth/inst_acc", "humaneval/pass@1", "arith/acc", "gsm-synth/acc",
    "caption-synth/rougeL", "strings/exact_match", "fidelity/kl", "fidelity/nll", "fidelity/rouge_l", AVERAGE, GAP,
]  # fmt: skip

# v: every primary task metric averages to v (arith +0.05 and strings -0.05 cancel); the non-primary inst_acc is 1 - v
TEACHER, INIT = 0.60, 0.20
V = {
    "sft": [0.30, 0.34, 0.32],
    "kd": [0.36, 0.38, 0.40],
    "distillm": [0.31, 0.39, 0.29, 0.90],  # seed 3 is shared with neither SFT nor KD
    "zz": [0.50],  # one seed only
    "dpkd": [0.35, 0.36, 0.37],
}
LABELS = {"sft": "SFT", "kd": "KD", "distillm": "DistiLLM", "zz": "ZZ", "dpkd": "DPKD"}


def _metrics(v: float) -> dict[str, float]:
    return {
        "ifeval-synth/prompt_acc": v, "ifeval-synth/inst_acc": 1.0 - v, "humaneval/pass@1": v, "arith/acc": v + 0.05,
        "gsm-synth/acc": v, "caption-synth/rougeL": v, "strings/exact_match": v - 0.05,
        "fidelity/kl": 4.0 - 5.0 * v, "fidelity/nll": 5.0 - 5.0 * v, "fidelity/rouge_l": v / 2,
    }  # fmt: skip


def _with_info(values: dict[str, float]) -> dict[str, dict]:
    return {k: {"value": v, **INFO[k]} for k, v in values.items()}


def _curve(seed: int) -> list[dict]:
    tokens = [1000 + seed, 2000 + seed, 3000 - seed]
    return [
        {"tokens": t, "metrics": {"ifeval-synth/prompt_acc": 0.2 + 0.05 * i + 0.01 * seed, "ifeval-synth/inst_acc": 0.99,
                                  "arith/acc": 0.1 * i, "gsm-synth/acc": 0.1 * i + 0.02}}
        for i, t in enumerate(tokens)
    ]  # fmt: skip


def _record(role, method, seed, v, curve=None, setup=None):
    rec = {
        "schema": SCHEMA, "run_id": "stats-1", "suite": "stats", "suite_hash": "abcd",
        "model": {"role": role, "method": method, "seed": seed,
                  "label": LABELS.get(method, {"teacher": "Teacher", "student-init": "Student init"}[role]
                                      if role != "method" else method)},
        "metrics": _with_info(_metrics(v)), "tasks": {}, "train": None,
    }  # fmt: skip
    if role == "method":
        rec["train"] = {"wall_s": 100.0 + 10 * (seed or 0), "tokens": 3000, "tokens_per_s": 30.0,
                        "generation_s": 0.0, "generation_share": 0.0, "peak_rss_mib": 1000.0}  # fmt: skip
        if setup is not None:
            rec["train"]["setup_generation_s"] = setup
    if curve is not None:
        rec["curve"] = curve
    return rec


def make_records(curves: bool = False) -> list[dict]:
    def method(m):
        return [
            _record("method", m, s, v, _curve(s) if curves and m in ("sft", "kd") else None,
                    setup=50.0 if m == "dpkd" else None)
            for s, v in enumerate(V[m])
        ]  # fmt: skip

    init_curve = [{"tokens": 0, "metrics": {"ifeval-synth/prompt_acc": 0.2, "arith/acc": 0.2, "gsm-synth/acc": 0.2}}]
    # first-seen order of the methods outside the canonical list: zz before dpkd
    return [
        *method("distillm"), *method("zz"), _record("teacher", None, None, TEACHER), *method("kd"), *method("dpkd"),
        _record("student-init", None, None, INIT, init_curve if curves else None), *method("sft"),
    ]  # fmt: skip


def row(lb, label):
    return next(r for r in lb.rows if r.label == label)


def cells(line: str) -> list[str]:
    """The stripped cells of a Markdown table line."""
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def _half(xs):  # the hand formula
    return T2 * statistics.stdev(xs) / math.sqrt(len(xs))


# --------------------------------------------------------------------------- CI


def test_t_critical_values_and_ci_half_width():
    from scipy.stats import t

    for df in range(1, 61):
        assert t_table(df) == pytest.approx(float(t.ppf(0.975, df)), abs=2e-7), df
        assert t_crit(df) == pytest.approx(float(t.ppf(0.975, df)), rel=1e-12)
    assert t_table(2) == pytest.approx(T2, abs=1e-9)
    xs = [0.30, 0.34, 0.32]
    assert ci_half(xs) == pytest.approx(T2 * 0.02 / math.sqrt(3), rel=1e-9)
    assert Stat(xs).ci95 == ci_half(xs) and Stat([0.3]).ci95 is None
    lb = build_leaderboard(make_records())
    sft = row(lb, "SFT").cells["fidelity/kl"]
    kl = [4.0 - 5.0 * v for v in V["sft"]]
    assert sft.values == pytest.approx(kl) and sft.ci95 == pytest.approx(_half(kl), rel=1e-9)
    md = render(lb, "md")
    sft_line = next(line for line in md.splitlines() if line.startswith("| SFT "))
    assert f"2.400 ± {_half(kl):.3f}" in sft_line  # 2.400 ± 0.248
    zz_line = next(line for line in md.splitlines() if line.startswith("| ZZ "))
    assert "1.500" in zz_line and "1.500 ±" not in zz_line  # one seed: a single value
    assert "95% CI half-width t\\_{0.975, n−1} · s / √n" in md and "a single value where n = 1" in md


# --------------------------------------------------------------------------- order


def test_column_and_row_order():
    lb = build_leaderboard(make_records())
    assert [c.key for c in lb.columns] == COLUMN_ORDER
    assert [r.label for r in lb.rows] == ["Teacher", "Student init", "SFT", "KD", "DistiLLM", "ZZ", "DPKD"]
    header = render(lb, "md").splitlines()[2]
    assert header.index("Instruction: IFEval prompt") < header.index("Code:") < header.index("Math: Arith")
    assert header.index("Caption:") < header.index("Strings:") < header.index("Fidelity: KL") < header.index("Avg.")
    assert header.index("Avg.") < header.index("Gap rec.") < header.index("Δ KL")
    assert "IFEval inst° ↑" in header  # a secondary metric is shown, marked
    cost = build_cost_table(make_records())
    assert [r.label for r in cost.rows] == ["SFT", "KD", "DistiLLM", "ZZ", "DPKD"]


def test_non_primary_metric_is_not_averaged():
    lb = build_leaderboard(make_records())
    kd = row(lb, "KD").cells[AVERAGE]
    assert kd.values == pytest.approx(V["kd"])  # inst_acc (1 - v) would pull it towards 0.5
    assert kd.seeds == [0, 1, 2]
    assert kd.mean == pytest.approx(0.38) and kd.ci95 == pytest.approx(_half(V["kd"]))
    assert "° a task's secondary metric: shown, not counted in Avg." in render(lb, "md")
    # records that disagree on whether a metric is primary are never mixed
    records = make_records()
    records[-1]["metrics"]["ifeval-synth/inst_acc"]["primary"] = True
    with pytest.raises(ValueError, match=r"metrics\['ifeval-synth/inst_acc'\].primary"):
        build_leaderboard(records)


# --------------------------------------------------------------------------- gap recovered


def test_gap_recovered_per_seed_then_averaged():
    lb = build_leaderboard(make_records())
    assert lb.gap == pytest.approx(TEACHER - INIT)
    for label, key in (("SFT", "sft"), ("DistiLLM", "distillm")):
        gap = row(lb, label).cells[GAP]
        per_seed = [(v - INIT) / (TEACHER - INIT) for v in V[key]]
        assert gap.values == pytest.approx(per_seed)
        assert gap.mean == pytest.approx(statistics.fmean(per_seed))
        n = len(per_seed)
        assert gap.ci95 == pytest.approx(t_crit(n - 1) * statistics.stdev(per_seed) / math.sqrt(n))
    assert row(lb, "SFT").cells[GAP].mean == pytest.approx(0.30)
    assert row(lb, "DistiLLM").cells[GAP].mean == pytest.approx((0.275 + 0.475 + 0.225 + 1.75) / 4)
    for label in ("Teacher", "Student init"):
        assert row(lb, label).cells[GAP].mean is None
    md = render(lb, "md").splitlines()
    gap_col = cells(md[2]).index("Gap rec. ↑")
    assert [cells(line)[0] for line in md[4:6]] == ["Teacher", "Student init"]
    for line in md[4:6]:
        assert cells(line)[gap_col] == "–"
    sft_gap = _half([0.25, 0.35, 0.30])
    assert cells(md[6])[0] == "SFT" and cells(md[6])[gap_col] == f"0.300 ± {sft_gap:.3f}"
    assert "**1.750**" not in "\n".join(md)  # DistiLLM's best single seed is not a cell
    # a zero gap: "–" everywhere
    records = make_records()
    for rec in records:
        if rec["model"]["role"] == "teacher":
            rec["metrics"] = _with_info(_metrics(INIT))
    lb0 = build_leaderboard(records)
    assert all(r.cells[GAP].mean is None for r in lb0.rows)
    assert "everywhere here: the gap is 0" in render(lb0, "md")


# --------------------------------------------------------------------------- paired


def test_paired_differences_and_ci_by_hand():
    pt = build_paired(build_leaderboard(make_records()))
    assert pt.references == [("sft", "SFT"), ("kd", "KD")]
    assert [c.key for c in pt.metrics] == [
        AVERAGE, "ifeval-synth/prompt_acc", "humaneval/pass@1", "arith/acc", "gsm-synth/acc", "caption-synth/rougeL",
        "strings/exact_match", "fidelity/kl",
    ]  # fmt: skip
    found = {(r.reference_method, r.method): r for r in pt.rows}
    assert ("sft", "sft") not in found and ("kd", "kd") not in found
    cases = {  # (reference, method): per-seed Avg. differences on the shared seeds, significant?
        ("sft", "kd"): ([0.06, 0.04, 0.08], True),  # 0.06 ± 0.050
        ("sft", "distillm"): ([0.01, 0.05, -0.03], False),  # 0.01 ± 0.099; seed 3 is not paired
        ("sft", "dpkd"): ([0.05, 0.02, 0.05], False),  # 0.04 ± 0.043: the CI just includes 0
        ("kd", "sft"): ([-0.06, -0.04, -0.08], True),
        ("kd", "distillm"): ([-0.05, 0.01, -0.11], False),
    }
    for (ref, method), (diffs, significant) in cases.items():
        r = found[(ref, method)]
        assert r.seeds == [0, 1, 2]
        d = r.diffs[AVERAGE]
        assert d.n == 3 and d.rule == "paired"
        assert d.mean == pytest.approx(statistics.fmean(diffs))
        assert d.half == pytest.approx(_half(diffs))
        assert d.significant is significant, (ref, method)
        kl = r.diffs["fidelity/kl"]  # KL = 4 - 5 v: the differences scale by -5
        assert kl.mean == pytest.approx(-5 * statistics.fmean(diffs)) and kl.half == pytest.approx(5 * _half(diffs))
    assert found[("sft", "dpkd")].diffs[AVERAGE].half == pytest.approx(0.0430265, rel=1e-5)
    zz = found[("sft", "zz")].diffs[AVERAGE]  # one shared seed: a difference, no CI, no mark
    assert zz.n == 1 and zz.mean == pytest.approx(0.20) and zz.half is None and not zz.significant

    md = render_paired(pt, "md")
    assert "vs SFT:" in md and "vs KD:" in md
    vs_sft = md.split("vs SFT:")[1].split("vs KD:")[0]
    kd_line = next(line for line in vs_sft.splitlines() if line.startswith("| KD "))
    assert "+0.060 ± 0.050†" in kd_line and "-0.300 ± 0.248†" in kd_line
    dpkd_line = next(line for line in vs_sft.splitlines() if line.startswith("| DPKD "))
    assert "+0.040 ± 0.043" in dpkd_line and "†" not in dpkd_line
    zz_line = next(line for line in vs_sft.splitlines() if line.startswith("| ZZ "))
    assert cells(zz_line)[1:3] == ["1", "+0.200"] and "±" not in zz_line
    assert "† where the CI excludes 0" in md and "Here n = 1–3." in md

    rows = list(csv.DictReader(io.StringIO(render_paired(pt, "csv"))))
    kd_avg = next(r for r in rows if (r["reference"], r["method"], r["metric"]) == ("sft", "kd", AVERAGE))
    assert float(kd_avg["mean_diff"]) == pytest.approx(0.06) and kd_avg["significant"] == "1"
    assert float(kd_avg["ci95_low"]) == pytest.approx(0.06 - _half([0.06, 0.04, 0.08]))
    assert kd_avg["n"] == "3" and kd_avg["seeds"] == "0;1;2"
    data = json.loads(render_paired(pt, "json"))
    assert data["schema"] == "distillm-bench/paired/v1" and data["references"] == ["sft", "kd"]


def test_paired_with_only_kd_and_without_references():
    records = [r for r in make_records() if r["model"]["method"] != "sft"]
    pt = build_paired(build_leaderboard(records))
    assert pt.references == [("kd", "KD")]
    assert "vs KD:" in render_paired(pt, "md") and "vs SFT" not in render_paired(pt, "md")
    none = build_paired(build_leaderboard([r for r in records if r["model"]["method"] != "kd"]))
    assert none.rows == [] and "nothing to compare" in render_paired(none, "md")


def test_delta_vs_init_uses_the_rows_ci():
    lb = build_leaderboard(make_records())
    sft = row(lb, "SFT")
    changes = [(4.0 - 5.0 * v) - (4.0 - 5.0 * INIT) for v in V["sft"]]
    assert sft.delta == pytest.approx(statistics.fmean(changes)) and sft.delta_ci95 == pytest.approx(_half(changes))
    assert sft.delta_significant  # -0.6 ± 0.248


def test_separation_uses_paired_ci_with_shared_seeds():
    from bench.separation import pairs, render_md

    lb = build_leaderboard(make_records())
    found = {(p.a, p.b): p for p in pairs(lb)}
    sft_kd = found[("SFT", "KD")]  # KL differences on seeds 0-2: 5 * (0.06, 0.04, 0.08)
    assert sft_kd.rule == "paired" and sft_kd.n == 3
    assert sft_kd.diff == pytest.approx(0.30) and sft_kd.half == pytest.approx(5 * _half([0.06, 0.04, 0.08]))
    assert sft_kd.separates
    sft_distillm = found[("SFT", "DistiLLM")]
    assert sft_distillm.n == 3 and not sft_distillm.separates  # only the shared seeds: seed 3 (0.90) is ignored
    assert sft_distillm.diff == pytest.approx(0.05)
    assert found[("SFT", "ZZ")].rule == "spread"  # one shared seed: the old heuristic
    assert "| KD | -0.300 ± " not in render_md(lb) and "| KD | -0.900† | -0.300† |" in render_md(lb)


# --------------------------------------------------------------------------- cost


def test_cost_table_teacher_generation_and_total():
    cost = build_cost_table(make_records())
    keys = [k for k, _ in cost.fields]
    assert keys == ["wall_s", "setup_generation_s", "total_s", "tokens_per_s", "generation_share", "peak_rss_mib"]
    dpkd, sft = (next(r for r in cost.rows if r.method == m) for m in ("dpkd", "sft"))
    assert dpkd.cells["setup_generation_s"].mean == pytest.approx(50.0)
    assert dpkd.cells["total_s"].values == pytest.approx([150.0, 160.0, 170.0])
    assert sft.cells["setup_generation_s"].values == [0.0, 0.0, 0.0]  # absent: 0
    assert sft.cells["total_s"].values == pytest.approx([100.0, 110.0, 120.0])
    assert dpkd.ratios["total_s"] == pytest.approx(160.0 / 110.0)
    md = render_cost(cost, "md")
    header = cells(md.splitlines()[2])
    dpkd_line = cells(next(line for line in md.splitlines() if line.startswith("| DPKD ")))
    assert dpkd_line[header.index("Teacher gen. (s)")] == "50.0" and dpkd_line[header.index("Total (s)")] == "160.0"
    rows = list(csv.DictReader(io.StringIO(render_cost(cost, "csv"))))
    assert float(rows[-1]["total_s"]) == pytest.approx(160.0)
    without = [r for r in make_records() if r["model"]["method"] != "dpkd"]
    assert "Teacher gen." not in render_cost(build_cost_table(without), "md")


# --------------------------------------------------------------------------- curves and files


def test_learning_curves_plot_and_csv(tmp_path):
    from bench.plots import _mean_line, curve_points, write_plots

    records = make_records(curves=True)
    points = curve_points(records)
    assert {p["category"] for p in points} == {"instruction", "math"}
    written = write_plots(tmp_path, records)
    assert [p.name for p in written] == ["leaderboard.png", "learning_curves.png", "curves.csv"]
    png = (tmp_path / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    rows = list(csv.DictReader(io.StringIO((tmp_path / "curves.csv").read_text())))
    assert list(rows[0]) == ["method", "seed", "tokens", "category", "value"]
    assert len(rows) == 2 * 3 * 3 * 2 + 2  # (sft, kd) x 3 seeds x 3 points x 2 categories + the init's point
    init = [r for r in rows if r["method"] == "student-init"]
    assert [(r["seed"], float(r["tokens"]), r["category"], float(r["value"])) for r in init] == [
        ("", 0.0, "instruction", pytest.approx(0.2)), ("", 0.0, "math", pytest.approx(0.2))
    ]  # fmt: skip
    get = {(r["method"], r["seed"], float(r["tokens"]), r["category"]): float(r["value"]) for r in rows}
    # kd seed 1, point 2: tokens 3000 - 1; instruction = prompt_acc only (inst_acc is secondary); math = mean of 2
    assert get[("kd", "1", 2999.0, "instruction")] == pytest.approx(0.2 + 0.05 * 2 + 0.01)
    assert get[("kd", "1", 2999.0, "math")] == pytest.approx((0.2 + 0.22) / 2)
    assert [r["method"] for r in rows[2:4]] == ["sft", "sft"]  # leaderboard order: init, then SFT, then KD
    # the plotted line: aligned by point index, x the mean token count, y the mean, CI over the seeds
    kd_instr = [p for p in points if p["method"] == "kd" and p["category"] == "instruction"]
    xs, ys, halves = _mean_line(kd_instr)
    assert xs == pytest.approx([1001.0, 2001.0, 2999.0])
    assert ys == pytest.approx([0.21, 0.26, 0.31])
    assert halves[0] == pytest.approx(_half([0.20, 0.21, 0.22]))


def test_records_without_curves_write_no_learning_curves(tmp_path):
    from bench.plots import plot_learning_curves, write_plots

    records = make_records()
    assert plot_learning_curves(tmp_path, records) is None
    assert [p.name for p in write_plots(tmp_path, records)] == ["leaderboard.png"]
    assert not (tmp_path / "learning_curves.png").exists() and not (tmp_path / "curves.csv").exists()


def test_write_all_and_cli_paired(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "records").mkdir(parents=True)
    for i, rec in enumerate(make_records()):
        (run / "records" / f"{i:02d}.json").write_text(json.dumps(rec))
    names = {p.name for p in write_all(run)}
    assert {"paired.md", "paired.csv", "paired.json", "separation.md", "leaderboard.md"} <= names
    assert main(["leaderboard", str(run), "--table", "paired"]) == 0
    assert "**Paired comparisons**" in capsys.readouterr().out
    assert main(["leaderboard", str(run), "--table", "paired", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("reference,method,label,metric")
    assert main(["leaderboard", str(run), "--table", "paired", "--format", "latex"]) == 2
    assert "--table paired is rendered as md, csv, json only" in capsys.readouterr().err
    tex = render(build_leaderboard(make_records()), "latex")
    assert tex.isascii() and r"IFEval inst$^\circ$" in tex
