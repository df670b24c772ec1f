"""Rendering of the tables (Markdown, LaTeX, CSV, JSON): the leaderboard and the cost table built by
``bench/leaderboard.py``, and the shared cell formatting the other tables use."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from bench.leaderboard import (
    FORMATS,
    REFERENCE_METHOD,
    Column,
    CostTable,
    Leaderboard,
    Row,
)
from bench.stats import Stat


def fmt_num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 10:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _cell_text(stat: Stat, pm: str) -> str:
    if stat.mean is None:
        return "–"
    half = stat.ci95
    return fmt_num(stat.mean) if half is None else f"{fmt_num(stat.mean)}{pm}{fmt_num(half)}"


def _delta_text(row: Row, dagger: str) -> str:
    if row.delta is None:
        return "–"
    return f"{row.delta:+.3f}{dagger if row.delta_significant else ''}"


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table (first column left-aligned, the others right-aligned)."""
    widths = [max(3, *(len(r[i]) for r in [header, *rows])) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    sep = line(["-" * widths[0], *[("-" * (w - 1) + ":") for w in widths[1:]]])
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


def _md_doc(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """A title line, a pipe table and bullet footnotes."""
    return f"{title}\n\n{_md_table(header, rows)}\n\n" + "".join(f"- {_md_escape(n)}\n" for n in notes)


_TEX_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "±": r"$\pm$", "×": r"$\times$", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
    "≈": r"$\approx$", "‖": r"$\|$", "Δ": r"$\Delta$", "φ": r"$\phi$", "α": r"$\alpha$", "β": r"$\beta$",
    "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--", "—": "---", "·": r"$\cdot$", "≥": r"$\geq$",
    "≤": r"$\leq$", "−": "$-$", "√": r"$\surd$", "°": r"$^\circ$",
}  # fmt: skip


def tex_escape(text: str) -> str:
    """Escape for LaTeX text mode (pdflatex-safe: other non-ASCII characters become '?')."""
    return "".join(_TEX_CHARS.get(ch, ch if ch.isascii() else "?") for ch in text)


def _tex_doc(caption: str, label: str, ncols: int, head: list[str], body: list[str], notes: list[str]) -> str:
    """A booktabs ``table`` float. The tabular is scaled down to the line width when it is wider and graphicx is
    loaded (``\resizebox``); without graphicx it keeps its natural width. Only booktabs is required."""
    note = " ".join(tex_escape(n).replace("* pipeline", "$^*$ pipeline") for n in notes)
    lines = [
        f"% distillm-bench {label}: needs \\usepackage{{booktabs}} (graphicx optional: scales the table to fit)",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:{label}}}",
        r"\setbox0=\hbox{%",
        r"\begin{tabular}{l" + "r" * (ncols - 1) + "}",
        r"\toprule",
        *head,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}%",
        r"\ifdim\wd0>\linewidth\ifdefined\resizebox\resizebox{\linewidth}{!}{\box0}\else\box0\fi\else\box0\fi",
        r"\par\smallskip",
        r"\begin{minipage}{\linewidth}\footnotesize",
        note,
        r"\end{minipage}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _secondary(col: Column) -> bool:
    return not col.primary and col.category not in ("fidelity", "")


def _header_label(col: Column) -> str:
    star = "*" if col.pipeline_check else ""
    ring = "°" if _secondary(col) else ""
    return f"{col.label}{star}{ring} {'↑' if col.higher_is_better else '↓'}"


def _tex_header(col: Column) -> str:
    star = "$^*$" if col.pipeline_check else ""
    ring = r"$^\circ$" if _secondary(col) else ""
    arrow = r"$\uparrow$" if col.higher_is_better else r"$\downarrow$"
    return f"{tex_escape(col.label)}{star}{ring} {arrow}"


def _delta_header(lb: Leaderboard) -> str:
    head = next((c for c in lb.columns if c.key == lb.headline), None)
    return f"Δ {head.label}" if head else "Δ"


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def _csv_num(x: float | None) -> str:
    return "" if x is None else repr(x)


def render(lb: Leaderboard, fmt: str) -> str:
    """The leaderboard as Markdown (``md``), a LaTeX table float (``latex``), ``csv`` or ``json``."""
    if fmt == "md":
        header = ["Model", "n"]
        for col in lb.columns:
            header.append(_md_escape(f"{col.category.capitalize()}: " * bool(col.category) + _header_label(col)))
        rows = []
        for row in lb.rows:
            cells = [_md_escape(row.label), str(len(row.seeds))]
            for col in lb.columns:
                text = _cell_text(row.cells[col.key], " ± ")
                cells.append(f"**{text}**" if col.key in row.best else text)
            rows.append([*cells, _delta_text(row, "†")])
        title = f"**Leaderboard**: suite `{lb.suite}` (hash `{lb.suite_hash}`), run {', '.join(lb.run_ids)}"
        return _md_doc(title, [*header, _md_escape(_delta_header(lb))], rows, lb.footnotes)
    if fmt == "latex":
        return _render_latex(lb)
    if fmt == "csv":
        header = ["model", "role", "method", "n", "seeds"]
        header += [f"{c.key}/{stat}" for c in lb.columns for stat in ("mean", "ci95", "std", "n")]
        rows = []
        for row in lb.rows:
            line: list[Any] = [row.label, row.role, row.method or "", len(row.seeds), ";".join(map(str, row.seeds))]
            for c in lb.columns:
                s = row.cells[c.key]
                line += [_csv_num(s.mean), _csv_num(s.ci95), _csv_num(s.std), s.n]
            best = ";".join(c.key for c in lb.columns if c.key in row.best)
            rows.append([*line, _csv_num(row.delta), _csv_num(row.delta_ci95), int(row.delta_significant), best])
        return _csv_text([*header, "delta", "delta_ci95", "delta_significant", "best"], rows)
    if fmt == "json":
        return json.dumps(leaderboard_to_dict(lb), indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def _tex_category_header(columns: list[Column], offset: int) -> list[str]:
    """The ``\\multicolumn`` category row and its ``\\cmidrule``s; ``offset`` leading columns stay empty."""
    spans: list[tuple[str, int, int]] = []  # (category, first column index, count)
    for i, col in enumerate(columns):
        if spans and spans[-1][0] == col.category:
            spans[-1] = (col.category, spans[-1][1], spans[-1][2] + 1)
        else:
            spans.append((col.category, i, 1))
    cells, rules = [""] * offset, []
    for category, start, count in spans:
        if not category:
            cells.extend([""] * count)
            continue
        cells.append(rf"\multicolumn{{{count}}}{{c}}{{{tex_escape(category.capitalize())}}}")
        first = offset + start + 1
        rules.append(rf"\cmidrule(lr){{{first}-{first + count - 1}}}")
    return [" & ".join(cells) + r" \\", " ".join(rules)]


def _render_latex(lb: Leaderboard) -> str:
    header = ["Model", "$n$", *[_tex_header(c) for c in lb.columns], tex_escape(_delta_header(lb))]
    body: list[str] = []
    for i, row in enumerate(lb.rows):
        if i and row.role != lb.rows[i - 1].role and lb.rows[i - 1].role != "student-init":
            body.append(r"\midrule")  # the teacher apart from the students
        cells = [tex_escape(row.label), str(len(row.seeds))]
        for col in lb.columns:
            text = _cell_text(row.cells[col.key], r" $\pm$ ").replace("–", "--")
            cells.append(rf"\textbf{{{text}}}" if col.key in row.best else text)
        delta = _delta_text(row, r"$^\dagger$").replace("–", "--")
        cells.append("$-$" + delta[1:] if delta.startswith("-") else delta)
        body.append(" & ".join(cells) + r" \\")
    caption = (
        f"Leaderboard of suite \\texttt{{{tex_escape(lb.suite)}}} "
        f"(suite hash \\texttt{{{tex_escape(lb.suite_hash)}}}; run {tex_escape(', '.join(lb.run_ids))})."
    )
    head = [*_tex_category_header(lb.columns, offset=2), " & ".join(header) + r" \\"]
    return _tex_doc(caption, "leaderboard", len(header), head, body, lb.footnotes)


def leaderboard_to_dict(lb: Leaderboard) -> dict[str, Any]:
    rows = [
        {"label": r.label, "role": r.role, "method": r.method, "seeds": r.seeds,
         "cells": {k: {"mean": s.mean, "ci95": s.ci95, "std": s.std, "n": s.n, "values": s.values,
                       "seeds": s.seeds} for k, s in r.cells.items()},
         "delta": r.delta, "delta_ci95": r.delta_ci95, "delta_significant": r.delta_significant,
         "best": [c.key for c in lb.columns if c.key in r.best]}
        for r in lb.rows
    ]  # fmt: skip
    return {"schema": "distillm-bench/leaderboard/v2", "suite": lb.suite, "suite_hash": lb.suite_hash,
            "run_ids": lb.run_ids, "headline": lb.headline, "gap": lb.gap,
            "columns": [vars(c) for c in lb.columns], "rows": rows, "footnotes": lb.footnotes}  # fmt: skip


_WHOLE_SECONDS = ("tokens_per_s", "peak_rss_mib")


def _cost_value(key: str, stat: Stat) -> str:
    if stat.mean is None:
        return "–"
    if key == "generation_share":
        return f"{100 * stat.mean:.0f}%"
    return f"{stat.mean:.0f}" if key in _WHOLE_SECONDS else f"{stat.mean:.1f}"


def _ratio_text(x: float | None, times: str) -> str:
    return "–" if x is None else f"{x:.2f}{times}"


def _cost_grid(cost: CostTable, times: str) -> tuple[list[str], list[list[str]]]:
    header = ["Method", "n"]
    for _, title in cost.fields:
        header += [title, f"×{cost.reference}"] if cost.reference else [title]
    rows = []
    for row in cost.rows:
        cells = [row.label, str(len(row.seeds))]
        for key, _ in cost.fields:
            cells.append(_cost_value(key, row.cells[key]))
            if cost.reference:
                cells.append(_ratio_text(row.ratios[key], times))
        rows.append(cells)
    return header, rows


def render_cost(cost: CostTable, fmt: str) -> str:
    """The cost table as Markdown (``md``), a LaTeX table float (``latex``), ``csv`` or ``json``."""
    keys = [k for k, _ in cost.fields]
    if fmt in ("md", "latex"):
        header, rows = _cost_grid(cost, "×")
        if fmt == "md":
            title = f"**Cost per method**: suite `{cost.suite}` (hash `{cost.suite_hash}`)"
            return _md_doc(title, [_md_escape(h) for h in header], rows, cost.footnotes)
        caption = f"Training cost per method, suite \\texttt{{{tex_escape(cost.suite)}}}."
        head = [" & ".join(tex_escape(h) for h in header) + r" \\"]
        body = [" & ".join(tex_escape(c) for c in r) + r" \\" for r in rows]
        return _tex_doc(caption, "cost", len(header), head, body, cost.footnotes)
    if fmt == "csv":
        header = ["method", "label", "n", *keys, *[f"{k}/ratio_to_{REFERENCE_METHOD}" for k in keys]]
        rows = [
            [r.method, r.label, len(r.seeds), *[_csv_num(r.cells[k].mean) for k in keys],
             *[_csv_num(r.ratios[k]) for k in keys]]
            for r in cost.rows
        ]  # fmt: skip
        return _csv_text(header, rows)
    if fmt == "json":
        rows = [
            {"method": r.method, "label": r.label, "seeds": r.seeds, "mean": {k: s.mean for k, s in r.cells.items()},
             "values": {k: s.values for k, s in r.cells.items()}, "ratio": r.ratios}
            for r in cost.rows
        ]  # fmt: skip
        out = {"schema": "distillm-bench/cost/v1", "suite": cost.suite, "suite_hash": cost.suite_hash,
               "reference": cost.reference, "fields": keys, "rows": rows, "footnotes": cost.footnotes}  # fmt: skip
        return json.dumps(out, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
