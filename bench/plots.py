"""PNG plots next to the leaderboard tables (matplotlib, Agg backend).

- ``training_curves.png``: per method, against the optimizer step, the loss and its terms, φ (the adaptive
  off-policy threshold), the mean α (DistiLLM-2 curriculum), β (contrastive schedule) and the on-policy fraction.
  Read from each training stage's ``metrics.jsonl`` (the record's ``train.metrics``); seeds share a colour.
- ``leaderboard.png``: the headline metric per row (``fidelity/kl``, else Avg.) with seed std error bars.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.leaderboard import build_leaderboard
from distill.atomic import atomic_path

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


def _curves(run_dir: Path, records: list[dict[str, Any]]) -> dict[str, list[list[dict[str, Any]]]]:
    """label -> one metrics.jsonl row list per seed (records without a readable metrics file are skipped)."""
    out: dict[str, list[list[dict[str, Any]]]] = {}
    lb = build_leaderboard(records)
    for row in lb.rows:
        for rec in records:
            model = rec["model"]
            if (model["role"], model.get("method")) != (row.role, row.method):
                continue
            path = (rec.get("train") or {}).get("metrics")
            home = Path(rec["_source"]).parent.parent if "_source" in rec else run_dir  # the record's own run dir
            found = resolve_metrics_path(str(path), home) if path else None
            if found is not None and (rows := read_metrics(found)):
                out.setdefault(row.label, []).append(rows)
    return out


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_training_curves(run_dir: Path, records: list[dict[str, Any]]) -> Path | None:
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


def plot_leaderboard(run_dir: Path, records: list[dict[str, Any]]) -> Path | None:
    lb = build_leaderboard(records)
    if lb.headline is None:
        return None
    col = next(c for c in lb.columns if c.key == lb.headline)
    rows = [r for r in lb.rows if r.cells[col.key].mean is not None]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.6), layout="constrained")
    means = [r.cells[col.key].mean for r in rows]
    errs = [r.cells[col.key].std or 0.0 for r in rows]
    colors = ["#777777" if r.role == "teacher" else "#bbbbbb" if r.role == "student-init" else "#1f77b4" for r in rows]
    ax.bar(range(len(rows)), means, yerr=errs, capsize=4, color=colors)
    ax.set_xticks(range(len(rows)), [r.label for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{col.label} ({'higher' if col.higher_is_better else 'lower'} is better)")
    ax.set_title(f"{lb.suite}: {col.label}, mean ± std over seeds")
    path = _save(fig, run_dir / "leaderboard.png")
    plt.close(fig)
    return path


def write_plots(run_dir: Path, records: list[dict[str, Any]]) -> list[Path]:
    """Write ``training_curves.png`` (when any metrics.jsonl is found) and ``leaderboard.png`` into ``run_dir``."""
    run_dir = Path(run_dir)
    paths = [plot_training_curves(run_dir, records), plot_leaderboard(run_dir, records)]
    return [p for p in paths if p is not None]
