"""``distillm-bench bench losses``: peak memory and time of every divergence, naive vs chunked vs top-k teacher.

Every timed run is a fresh subprocess (``python -m bench.loss_bench --worker SPEC``, one JSON line on stdout), so
its peak memory is its own; the variants of one loss run round by round (naive, chunked, top-k..., naive, ...), so
that load drift on a shared machine hits them alike.

Inputs are synthetic and deterministic: teacher and student hidden states ``[N, H]`` and ``lm_head`` weights
``[V, H]``. Logits are ``bias + h @ W^T`` with a Zipf-like bias per token id (carried by a constant hidden feature)
and Gaussian scores, which gives an LM-like teacher (entropy ~2.4 nats); the student is the teacher with perturbed
weights. The teacher is given as hidden states + head to both the naive and the chunked variant, so neither gets a
precomputed ``[N, V]`` teacher tensor; the top-k variants get a sparse target cached on disk beforehand (that is
their point) and compute the student side chunked.

* ``naive``: ``logits = h @ W^T`` for both models, then :func:`distill.losses.compute_loss`.
* ``chunked``: :func:`distill.chunked.chunked_loss` with the teacher's hidden states and head.
* ``topk{k}``: :func:`distill.chunked.chunked_loss` with a :class:`distill.sparse.SparseTarget` loaded from disk.
* ``trl`` (generalized JSD only, where ``trl`` is installed): TRL's ``GKDTrainer.generalized_jsd_loss`` on the
  naive logits.

``seconds``: forward + backward (gradients to the student's hidden states and head), median over ``reps`` processes
of one timed run each (after ``warmup`` untimed ones). ``peak_mib``: the largest, over those processes, of the peak
resident memory during the runs minus the resident memory once the inputs are allocated (VmHWM after resetting it
via ``/proc/self/clear_refs``; ``ru_maxrss`` where that is not possible). Workers run with glibc's default malloc
(``MALLOC_*`` unset): tuned settings would hide frees. ``max_rel_err_*``: ``max |x - x_naive| / max |x_naive|``
against the naive variant (the exact full-teacher loss), over the loss and over the gradients of ``h`` and ``W``;
0 for the naive rows by definition.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from distill.atomic import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
DIVERGENCES: dict[str, dict[str, Any]] = {
    "forward_kl": {},
    "reverse_kl": {},
    "skew_forward_kl": {"alpha": 0.1},
    "skew_reverse_kl": {"alpha": 0.1},
    "generalized_jsd": {"beta": 0.5},
    "total_variation": {},
}
TOPK = (8, 32, 128)
ZIPF, SIGMA, STUDENT_NOISE = 1.5, 4.0, 0.5  # teacher logits: -ZIPF*log(1+rank) + N(0, SIGMA^2); student: + noise


def make_inputs(tokens: int, vocab: int, hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic synthetic hidden states ``[B, T, H]`` and heads ``[V, H]``; feature 0 carries the Zipf bias."""
    g = torch.Generator().manual_seed(seed)
    batch = 8 if tokens % 8 == 0 else 1
    h = torch.randn(batch, tokens // batch, hidden, generator=g)
    h[..., 0] = 1.0
    w_t = torch.randn(vocab, hidden, generator=g) * (SIGMA / (hidden - 1) ** 0.5)
    w_t[:, 0] = -ZIPF * torch.log1p(torch.randperm(vocab, generator=g).float())
    w_s = w_t + torch.randn(vocab, hidden, generator=g) * (STUDENT_NOISE * SIGMA / (hidden - 1) ** 0.5)
    w_s[:, 0] = w_t[:, 0]
    return {
        "h_s": h.clone().requires_grad_(),
        "w_s": w_s.requires_grad_(),
        "h_t": h,
        "w_t": w_t,
        "mask": torch.ones(h.shape[:2], dtype=torch.bool),
    }


def _status_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {key}")
    return int(match.group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _loss_fn(spec: dict[str, Any], x: dict[str, torch.Tensor], workdir: Path):
    """A closure computing the scalar loss of one variant (forward only; the caller runs backward)."""
    from distill.chunked import chunked_loss
    from distill.losses import compute_loss
    from distill.sparse import load_sparse_target

    name, variant, hp = spec["loss"], spec["variant"], DIVERGENCES[spec["loss"]]
    chunks = {"chunk_size": spec.get("chunk_size"), "loss_chunk_size": spec.get("loss_chunk_size")}
    if variant == "chunked":
        teacher = {"teacher_hidden": x["h_t"], "teacher_weight": x["w_t"]}
        return lambda: chunked_loss(name, x["h_s"], x["w_s"], mask=x["mask"], **chunks, **teacher, **hp)
    if variant.startswith("topk"):
        target = load_sparse_target(workdir / f"{variant}.safetensors")
        x["target"] = target  # allocated before the baseline, like the other inputs
        return lambda: chunked_loss(name, x["h_s"], x["w_s"], mask=x["mask"], teacher_logits=target, **chunks, **hp)

    if variant == "trl":  # imported before the memory baseline is taken
        from trl.experimental.gkd import GKDTrainer

    def naive() -> torch.Tensor:
        s_logits = x["h_s"] @ x["w_s"].T
        with torch.no_grad():
            t_logits = x["h_t"] @ x["w_t"].T
        if variant == "trl":
            labels = torch.zeros(x["mask"].shape, dtype=torch.long)  # all positions trained: a token mean
            return GKDTrainer.generalized_jsd_loss(s_logits, t_logits, labels=labels, beta=hp["beta"])
        return compute_loss(name, s_logits, t_logits, mask=x["mask"], reduction="token", **hp)

    if variant not in ("naive", "trl"):
        raise ValueError(f"unknown variant {variant!r}")
    return naive


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one (loss, variant) in this process; see the module docstring for what is measured."""
    workdir = Path(spec["workdir"])
    x = make_inputs(spec["tokens"], spec["vocab"], spec["hidden"], spec["seed"])
    fn = _loss_fn(spec, x, workdir)
    baseline = _status_kib("VmRSS")
    reset = _reset_peak()
    times, loss = [], None
    for rep in range(spec["warmup"] + spec["reps"]):
        x["h_s"].grad = x["w_s"].grad = None
        start = time.perf_counter()
        loss = fn()
        loss.backward()
        elapsed = time.perf_counter() - start
        if rep >= spec["warmup"]:
            times.append(elapsed)
    peak = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "loss": spec["loss"],
        "variant": spec["variant"],
        "tokens": spec["tokens"],
        "vocab": spec["vocab"],
        "hidden": spec["hidden"],
        "peak_mib": round((peak - baseline) / 1024, 1),
        "seconds": round(statistics.median(times), 4),
        "seconds_all": [round(t, 4) for t in times],
        "loss_value": float(loss.detach()),
        "baseline_mib": round(baseline / 1024, 1),
        "peak_method": "VmHWM after clear_refs" if reset else "ru_maxrss",
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if not torch.isfinite(loss.detach()):
        raise RuntimeError(f"{spec['loss']}/{spec['variant']}: non-finite loss {float(loss.detach())}")
    ref_path = workdir / f"ref_{spec['loss']}.pt"
    grads = {"loss": loss.detach().reshape(1), "grad_h": x["h_s"].grad, "grad_w": x["w_s"].grad}
    if spec["variant"] == "naive":
        torch.save(grads, ref_path)
        result["max_rel_err_loss"] = result["max_rel_err_grad"] = 0.0
    else:
        ref = torch.load(ref_path)
        result["max_rel_err_loss"] = _rel_err(grads["loss"], ref["loss"])
        result["max_rel_err_grad"] = max(_rel_err(grads[k], ref[k]) for k in ("grad_h", "grad_w"))
    return result


def prepare(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Cache the sparse teacher targets on disk and describe the synthetic teacher."""
    from distill.sparse import save_sparse_target, sparse_target_from_hidden

    x = make_inputs(cfg["tokens"], cfg["vocab"], cfg["hidden"], cfg["seed"])
    ks = [k for k in TOPK if k <= cfg["vocab"]]
    stats: dict[str, Any] = {"coverage": {}}
    for k in ks:
        target = sparse_target_from_hidden(x["h_t"], x["w_t"], k)
        save_sparse_target(target, workdir / f"topk{k}.safetensors")
        stats["coverage"][str(k)] = round(float((1 - target.log_rest.exp()).mean()), 4)
    with torch.no_grad():
        logp = torch.log_softmax(x["h_t"][0, :256] @ x["w_t"].T, -1)
        stats["entropy_nats"] = round(float(-(logp.exp() * logp).sum(-1).mean()), 3)
        stats["top1_prob"] = round(float(logp.amax(-1).exp().mean()), 3)
    return stats


def _spawn(payload: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loss_bench", "--worker", json.dumps(payload)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {payload.get('loss')}/{payload.get('variant')} failed: {proc.stderr.strip()[-2000:]}"
        )
    return json.loads(lines[-1])


def _plan(cfg: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Per loss, its variants in round order; naive first, since it writes the reference the others compare to."""
    plan = []
    for loss in cfg["losses"]:
        others = [v for v in cfg["variants"] if v != "naive" and (v != "trl" or loss == "generalized_jsd")]
        plan.append((loss, ["naive", *others]))
    return plan


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the single-run processes of one (loss, variant): median time, max peak, max error."""
    row = dict(runs[0])
    row["seconds_all"] = [r["seconds"] for r in runs]
    row["seconds"] = round(statistics.median(row["seconds_all"]), 4)
    row["peak_mib"] = max(r["peak_mib"] for r in runs)
    row["peak_mib_all"] = [r["peak_mib"] for r in runs]
    row["baseline_mib"] = round(statistics.median(r["baseline_mib"] for r in runs), 1)
    row["loadavg_1m"] = [r["loadavg_1m"] for r in runs]
    for key in ("max_rel_err_loss", "max_rel_err_grad"):
        row[key] = max(r[key] for r in runs)
    return row


def run_benchmark(cfg: dict[str, Any], on_update=None, log=print) -> dict[str, Any]:
    """Run every (loss, variant) and assemble the result record. Each timed run is its own process; the variants of
    a loss run round by round (naive, chunked, top-k..., naive, chunked, ...) so that load drift on a shared machine
    hits them alike. ``on_update(result)`` gets the partial record (``complete: false``) after each loss."""
    workdir = Path(tempfile.mkdtemp(prefix="loss-bench-"))
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    plan = _plan(cfg)
    try:
        teacher = prepare(cfg, workdir)  # in this process: it is not measured
        for i, (loss, variants) in enumerate(plan):
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for _ in range(cfg["reps"]):
                for variant in variants:
                    spec = {**cfg, "loss": loss, "variant": variant, "workdir": str(workdir), "reps": 1}
                    runs[variant].append(_spawn(spec))
            for variant in variants:
                rows.append(_merge(runs[variant]))
                log(f"{loss:16s} {variant:8s} peak {rows[-1]['peak_mib']:9.1f} MiB  {rows[-1]['seconds']:8.3f} s")
            result = _assemble(cfg, teacher, rows, load_before, complete=i == len(plan) - 1)
            if on_update is not None:
                on_update(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _assemble(
    cfg: dict[str, Any], teacher: dict[str, Any], rows: list[dict[str, Any]], load_before, complete: bool
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "losses",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": complete,
        "config": {**cfg, "hparams": {k: DIVERGENCES[k] for k in cfg["losses"]}, "reduction": "token"},
        "synthetic_teacher": {"zipf": ZIPF, "sigma": SIGMA, "student_noise": STUDENT_NOISE, **teacher},
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": _cpu_name(),
            "malloc": "glibc default in workers (MALLOC_* environment variables removed)",
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        },
        "rows": list(rows),
        "ratios": _ratios(rows),
    }


def _cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    match = re.search(r"^model name\s*:\s*(.+)$", info.read_text(), re.M) if info.exists() else None
    return match.group(1).strip() if match else platform.processor()


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    naive = {r["loss"]: r for r in rows if r["variant"] == "naive"}
    out = []
    for r in rows:
        base = naive.get(r["loss"])
        if r["variant"] == "naive" or base is None:
            continue
        mem = r["peak_mib"] / base["peak_mib"] if base["peak_mib"] > 0 else None
        t = r["seconds"] / base["seconds"]
        entry = {
            "loss": r["loss"],
            "variant": r["variant"],
            "memory_ratio": mem and round(mem, 4),
            "time_ratio": round(t, 3),
        }
        if r["variant"] == "chunked":
            entry["meets_target"] = mem is not None and mem <= 1 / 6 and t <= 1.2
        out.append(entry)
    return out


def render_markdown(result: dict[str, Any]) -> str:
    cfg, env, teacher = result["config"], result["env"], result["synthetic_teacher"]
    ratios = {(r["loss"], r["variant"]): r for r in result["ratios"]}
    lines = [
        "# Distillation loss benchmark: naive vs chunked vs top-k teacher",
        "",
        *([] if result.get("complete", True) else ["**Partial run: not every planned row has finished.**", ""]),
        f"Generated by `distillm-bench bench losses` on {result['created']}. N = {cfg['tokens']} tokens, "
        f"V = {cfg['vocab']}, H = {cfg['hidden']}, float32, CPU ({env['cpu']}, {env['threads']} threads), "
        f"torch {env['torch']}; forward + backward, median of {cfg['reps']} runs, each in a fresh process after "
        f"{cfg['warmup']} warm-up run(s), the variants of a loss interleaved round by round. "
        f"Load average before / after: {env['loadavg_before'][0]} / {env['loadavg_after'][0]} (a shared machine: "
        "timings carry noise). Peak memory: the worker's peak RSS minus its RSS once inputs are allocated, glibc "
        "default malloc, a fresh process per timed run (the row keeps the largest).",
        "",
        f"Synthetic teacher: entropy {teacher['entropy_nats']} nats, mean top-1 probability {teacher['top1_prob']}, "
        "mean top-k coverage " + ", ".join(f"k={k}: {v}" for k, v in teacher["coverage"].items()) + ". Errors are "
        "relative to the naive full-teacher loss: `max|x - x_naive| / max|x_naive|` over the loss and the gradients.",
        "",
        "| loss | variant | peak MiB | seconds | memory / naive | time / naive | rel. err. loss | rel. err. grad |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        ratio = ratios.get((r["loss"], r["variant"]), {})
        mem = ratio.get("memory_ratio")
        lines.append(
            f"| {r['loss']} | {r['variant']} | {r['peak_mib']:.0f} | {r['seconds']:.2f} | "
            f"{'' if mem is None else f'{mem:.3f}'} | {ratio.get('time_ratio', '')} | "
            f"{r['max_rel_err_loss']:.2e} | {r['max_rel_err_grad']:.2e} |"
        )
    chunked = [r for r in result["ratios"] if r["variant"] == "chunked"]
    if chunked:
        lines += [
            "",
            "Chunked against naive (target: memory <= 1/6, time <= 1.2x):",
            "",
            "| loss | memory ratio | time ratio | meets target |",
            "|---|---:|---:|---|",
        ]
        lines += [f"| {r['loss']} | {r['memory_ratio']} | {r['time_ratio']} | {r['meets_target']} |" for r in chunked]
    lines += [
        "",
        "Variants: `naive` materialises `[N, V]` logits for both models (`distill.losses.compute_loss`); `chunked` is "
        "`distill.chunked.chunked_loss` from hidden states + `lm_head` (teacher too); `topk{k}` is the same chunked "
        "student with a top-k + tail teacher target cached on disk (`distill.sparse`), whose errors against the full "
        "teacher are the tail terms documented there (always a lower bound); `trl` is TRL's "
        "`GKDTrainer.generalized_jsd_loss` on the naive logits. Anchor for the memory target: Liger-Kernel's fused "
        "linear JSD, 11.1 vs 68.9 GB at N = 8192 with a 128k vocabulary on an H100.",
    ]
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], out_dir: Path, name: str) -> tuple[Path, Path]:
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    atomic_write_json(json_path, result)
    atomic_write_text(md_path, render_markdown(result))
    return json_path, md_path


def _csv(allowed: list[str]):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {bad or text!r}; choose from {', '.join(allowed)}")
        return items

    return parse


def _cmd_losses(args: argparse.Namespace) -> int:
    from distill.chunked import DEFAULT_LOSS_CHUNK_BYTES, default_chunk_size

    if args.quick:
        args.tokens, args.vocab, args.hidden = 256, 32000, 256
    variants = args.variants or ["naive", "chunked", *(f"topk{k}" for k in TOPK if k <= args.vocab), "trl"]
    if "trl" in variants and importlib.util.find_spec("trl") is None:
        variants.remove("trl")
    cfg = {
        "tokens": args.tokens,
        "vocab": args.vocab,
        "hidden": args.hidden,
        "reps": args.reps,
        "warmup": args.warmup,
        "seed": args.seed,
        "chunk_size": args.chunk_size or default_chunk_size(args.vocab),
        "loss_chunk_size": args.loss_chunk_size or default_chunk_size(args.vocab, DEFAULT_LOSS_CHUNK_BYTES),
        "losses": args.losses,
        "variants": variants,
    }
    for key in ("tokens", "vocab", "hidden", "reps"):
        if cfg[key] < (1 if key == "reps" else 2):
            raise ValueError(f"--{key} too small: {cfg[key]}")
    name = args.name or ("losses" if not args.quick else "losses-quick")
    out = Path(args.out)
    result = run_benchmark(cfg, on_update=lambda partial: write_results(partial, out, name))
    paths = write_results(result, out, name)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks: losses (memory/time), trainer (throughput per method)")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    sub.required = True
    p = sub.add_parser("losses", help="memory and time of the distillation losses: naive, chunked, top-k teacher")
    p.add_argument("--tokens", type=int, default=2048, help="N = B*T tokens (default 2048)")
    p.add_argument("--vocab", type=int, default=128256, help="V (default 128256)")
    p.add_argument("--hidden", type=int, default=1024, help="H (default 1024)")
    p.add_argument("--reps", type=int, default=3, help="timed runs (processes) per variant; median")
    p.add_argument("--warmup", type=int, default=0, help="untimed runs in each process before its timed one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=None, help="tokens per lm_head block (default: 128 MiB budget)")
    p.add_argument("--loss-chunk-size", type=int, default=None, help="tokens per loss sub-chunk (default: 8 MiB)")
    p.add_argument("--losses", type=_csv(list(DIVERGENCES)), default=list(DIVERGENCES), help="comma-separated")
    variants = ["naive", "chunked", *(f"topk{k}" for k in TOPK), "trl"]
    p.add_argument("--variants", type=_csv(variants), default=None, help="comma-separated (default: all)")
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "benchmarks"), help="output directory")
    p.add_argument("--name", default=None, help="output file stem (default: losses, or losses-quick)")
    p.add_argument("--quick", action="store_true", help="N=256, V=32000, H=256: a smoke run in about a minute")
    p.set_defaults(func=_cmd_losses)
    from bench.trainer_bench import add_parser as add_trainer_parser

    add_trainer_parser(sub)


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loss_bench")
    parser.add_argument("--worker", required=True, help="JSON spec of one measurement (internal)")
    spec = json.loads(parser.parse_args(argv).worker)
    print(json.dumps(run_worker(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
