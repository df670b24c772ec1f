"""PNG plots next to the leaderboard tables (matplotlib, Agg backend).

- ``training_curves.png``: per method, against the optimizer step, the loss and its terms, φ (the adaptive
  off-policy threshold), the mean α (DistiLLM-2 curriculum), β (contrastive schedule) and the on-policy fraction.
  Read from each training stage's ``metrics.jsonl`` (the record's ``train.metrics``); seeds share a colour.
- ``leaderboard.png``: the headline metric per row (``fidelity/kl``, else Avg.) with 95% CI error bars over seeds.
- ``learning_curves.png`` and ``curves.csv``: from the records' optional ``curve`` (points along training:
  ``{"tokens": trained response tokens, "metrics": {key: value}}``), one panel per task category: the mean of the
  category's primary non-pipeline task metrics (the metrics Avg. counts) against the tokens; one line per method
  (the mean over seeds at each point index, x the mean token count there), a 95% CI band where ≥ 2 seeds have the
  point, the teacher's final value dashed and the student init's dotted. ``curves.csv`` holds the per-seed numbers
  behind it (method, seed, tokens, category, value). Neither is written when no record has a curve.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.leaderboard import _number, build_leaderboard, ci_half, group_records, in_average, record_average
from bench.record import Record, as_records
from bench.render import _csv_text
from distill.atomic import atomic_path, atomic_write_text

PANELS = (("loss", "loss (terms dashed)"), ("phi", "φ"), ("alpha", "α (mean)"), ("beta", "β"),
          ("on_policy_fraction", "on-policy fraction"))  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def resolve_metrics_path(path: str, run_dir: Path) -> Path | None:
    """Find a record's ``train.metrics`` file: as given (absolute or relative to the cwd), relative to the run dir
    or to its grandparent (the repo root for ``results/<run-id>``), or re-rooted at the run dir if it was moved."""
    p = Path(path)
    candidates = [p, run_dir / p, run_dir.parent.parent / p]
    if run_dir.name in p.parts:
        idx = len(p.parts) - 1 - p.parts[::-1].index(run_dir.name)
        candidates.append(run_dir.joinpath(*p.parts[idx + 1 :]))
    return next((c for c in candidates if c.is_file()), None)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write; the trainer truncates such rows on resume
    return rows


def _loss_terms(rows: list[dict[str, Any]]) -> list[str]:
    """The loss terms of a metrics.jsonl: ``distill/train.py`` lists them in each row's ``loss_terms`` (a
    single-term loss lists only "loss", whose curve is drawn anyway)."""
    terms: dict[str, None] = {}
    for row in rows:
        terms.update(dict.fromkeys(t for t in row.get("loss_terms", []) if t != "loss"))
    return list(terms)


def _value(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key)
    if key == "alpha":
        v = row.get("alpha_mean", v)
        if isinstance(v, list):
            v = sum(v) / len(v) if v else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _curves(run_dir: Path, records: list[Any]) -> dict[str, list[list[dict[str, Any]]]]:
    """label -> one metrics.jsonl row list per seed (records without a readable metrics file are skipped)."""
    out: dict[str, list[list[dict[str, Any]]]] = {}
    records = as_records(records)
    lb = build_leaderboard(records)
    for row in lb.rows:
        for rec in records:
            if (rec.model.role, rec.model.method) != (row.role, row.method):
                continue
            path = rec.train.metrics if rec.train is not None else None
            home = Path(rec.source).parent.parent if rec.source else run_dir  # the record's own run dir
            found = resolve_metrics_path(str(path), home) if path else None
            if found is not None and (rows := read_metrics(found)):
                out.setdefault(row.label, []).append(rows)
    return out


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_training_curves(run_dir: Path, records: list[Any]) -> Path | None:
    curves = _curves(run_dir, records)
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.6), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (key, title), ax in zip(PANELS, axes, strict=True):
        drawn = False
        for i, (label, seeds) in enumerate(curves.items()):
            color = colors[i % len(colors)]
            for s, rows in enumerate(seeds):
                names = [key]
                if key == "loss":
                    names += _loss_terms(rows)
                for name in names:
                    pts = [(r["step"], v) for r in rows if "step" in r and (v := _value(r, name)) is not None]
                    if not pts:
                        continue
                    steps, values = zip(*pts, strict=True)
                    legend = (label if name == key else f"{label}: {name}") if s == 0 else None
                    ax.plot(steps, values, color=color, alpha=1.0 if s == 0 else 0.45, lw=1.2,
                            ls="-" if name == key else "--", label=legend)  # fmt: skip
                    drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
        if drawn:
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle("Training curves (one colour per method; lighter lines: further seeds)")
    path = _save(fig, run_dir / "training_curves.png")
    plt.close(fig)
    return path


def plot_leaderboard(run_dir: Path, records: list[Any]) -> Path | None:
    lb = build_leaderboard(records)
    if lb.headline is None:
        return None
    col = next(c for c in lb.columns if c.key == lb.headline)
    rows = [r for r in lb.rows if r.cells[col.key].mean is not None]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.6), layout="constrained")
    means = [r.cells[col.key].mean for r in rows]
    errs = [r.cells[col.key].ci95 or 0.0 for r in rows]
    colors = ["#777777" if r.role == "teacher" else "#bbbbbb" if r.role == "student-init" else "#1f77b4" for r in rows]
    ax.bar(range(len(rows)), means, yerr=errs, capsize=4, color=colors)
    ax.set_xticks(range(len(rows)), [r.label for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{col.label} ({'higher' if col.higher_is_better else 'lower'} is better)")
    ax.set_title(f"{lb.suite}: {col.label}, mean ± 95% CI over seeds")
    path = _save(fig, run_dir / "leaderboard.png")
    plt.close(fig)
    return path


CURVE_FIELDS = ("method", "seed", "tokens", "category", "value")


def curve_points(records: list[Any]) -> list[dict[str, Any]]:
    """The per-seed learning-curve values: one dict per (record, curve point, task category) with ``method``
    (model.method, or the role for the student init), ``label``, ``role``, ``seed``, ``index`` (the point's position
    in the record's curve), ``tokens``, ``category`` and ``value`` (the mean of the category's primary non-pipeline
    task metrics present at that point). Leaderboard row order, then seed, then point, then category."""
    records = as_records(records)
    if not any(rec.curve for rec in records):
        return []
    lb = build_leaderboard(records)
    categories: dict[str, list[str]] = {}
    for col in lb.columns:
        if in_average(col):
            categories.setdefault(col.category, []).append(col.key)
    labels = {(r.role, r.method): r.label for r in lb.rows}
    out = []
    for (role, method), recs in group_records(records):
        for rec in recs:
            curve = rec.curve
            if curve is None:
                continue
            for index, point in enumerate(curve):
                if not isinstance(point, dict) or (tokens := _number(point.get("tokens"))) is None:
                    continue
                metrics = point.get("metrics") or {}
                for category, keys in categories.items():
                    values = [v for k in keys if (v := _number(metrics.get(k))) is not None]
                    if values:
                        out.append({"method": method or role, "label": labels[(role, method)], "role": role,
                                    "seed": rec.model.seed, "index": index, "tokens": tokens,
                                    "category": category, "value": statistics.fmean(values),
                                    "keys": [k for k in keys if _number(metrics.get(k)) is not None]})  # fmt: skip
    return out


def write_curves_csv(run_dir: Path, points: list[Any]) -> Path | None:
    if not points:
        return None
    rows = [[p["method"], "" if p["seed"] is None else p["seed"], p["tokens"], p["category"], repr(p["value"])]
            for p in points]  # fmt: skip
    path = Path(run_dir) / "curves.csv"
    atomic_write_text(path, _csv_text(list(CURVE_FIELDS), rows))
    return path


def _final_value(recs: list[Record], keys: list[str]) -> float | None:
    """The mean over ``recs`` of each record's mean over ``keys`` (records missing a key are skipped)."""
    per_rec = [v for rec in recs if keys and (v := record_average(rec, keys)) is not None]
    return statistics.fmean(per_rec) if per_rec else None


def _mean_line(points: list[dict[str, Any]]) -> tuple[list[float], list[float], list[float | None]]:
    """Align one method's seeds by point index: x the mean tokens, y the mean value, and the 95% CI half-width."""
    by_index: dict[int, list[dict[str, Any]]] = {}
    for p in points:
        by_index.setdefault(p["index"], []).append(p)
    xs, ys, halves = [], [], []
    for index in sorted(by_index):
        pts = by_index[index]
        xs.append(statistics.fmean(p["tokens"] for p in pts))
        ys.append(statistics.fmean(p["value"] for p in pts))
        halves.append(ci_half([p["value"] for p in pts]))
    return xs, ys, halves


def plot_learning_curves(run_dir: Path, records: list[Any], points=None) -> Path | None:
    """``learning_curves.png`` (see the module docstring); None when no record has a curve."""
    points = curve_points(records) if points is None else points
    if not points:
        return None
    categories = list(dict.fromkeys(p["category"] for p in points))
    by_role: dict[str, list[dict[str, Any]]] = {}
    for (role, _), recs in group_records(records):
        by_role.setdefault(role, []).extend(recs)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(categories), figsize=(4.6 * len(categories), 3.6), layout="constrained",
                             squeeze=False)  # fmt: skip
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys((p["role"], p["method"], p["label"]) for p in points if p["role"] == "method"))
    for category, ax in zip(categories, axes[0], strict=True):
        in_cat = [p for p in points if p["category"] == category]
        keys = list(dict.fromkeys(k for p in in_cat for k in p["keys"]))
        for i, (role, method, label) in enumerate(methods):
            mine = [p for p in in_cat if p["role"] == role and p["method"] == method]
            if not mine:
                continue
            xs, ys, halves = _mean_line(mine)
            init_pts = [p["value"] for p in in_cat if p["role"] == "student-init"]  # scored like the curve points
            start = statistics.fmean(init_pts) if init_pts else _final_value(by_role.get("student-init", []), keys)
            if start is not None and xs and xs[0] > 0:  # every method starts from the init at 0 tokens
                xs, ys, halves = [0, *xs], [start, *ys], [None, *halves]
            color = colors[i % len(colors)]
            ax.plot(xs, ys, color=color, lw=1.4, marker="o", ms=3, label=label)
            band = [(x, y, h) for x, y, h in zip(xs, ys, halves, strict=True) if h is not None]
            if band:
                bx, by, bh = zip(*band, strict=True)
                ax.fill_between(bx, [y - h for y, h in zip(by, bh, strict=True)],
                                [y + h for y, h in zip(by, bh, strict=True)], color=color, alpha=0.18, lw=0)  # fmt: skip
        for role, ls, name in (("teacher", "--", "Teacher"), ("student-init", ":", "Student init")):
            value = _final_value(by_role.get(role, []), keys)
            if value is not None:
                ax.axhline(value, color="#555555", ls=ls, lw=1.1, label=name)
        ax.set_title(f"{category}: mean of {len(keys)} primary metric{'s' * (len(keys) != 1)}")
        ax.set_xlabel("trained response tokens")
        ax.legend(fontsize=6)
    fig.suptitle("Learning curves (mean over seeds; band: 95% CI where ≥ 2 seeds)")
    path = _save(fig, Path(run_dir) / "learning_curves.png")
    plt.close(fig)
    return path


def write_plots(run_dir: Path, records: list[Any]) -> list[Path]:
    """Write ``training_curves.png`` (when any metrics.jsonl is found), ``leaderboard.png``, and
    ``learning_curves.png`` with ``curves.csv`` (when any record has a curve) into ``run_dir``."""
    run_dir = Path(run_dir)
    points = curve_points(records)
    paths = [
        plot_training_curves(run_dir, records),
        plot_leaderboard(run_dir, records),
        plot_learning_curves(run_dir, records, points),
        write_curves_csv(run_dir, points),
    ]
    return [p for p in paths if p is not None]
