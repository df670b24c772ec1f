"""``scripts/gpu-check.sh``: a one-shot check of every GPU path, as a pass / fail / skip table (≤ 8 min on one GPU).

Rows (each isolated: one failing check never hides the others):

* ``vllm-vs-hf-greedy``: vLLM and HF generation on the same prompts, greedy: the same tokens;
* ``train-bf16:<method>``: two bf16 training steps of every method on CUDA, finite losses;
* ``chunked-vs-naive:<loss>``: the chunked loss against the naive one on CUDA: values, gradients, peak memory;
* ``vllm-sync`` / ``vllm-sync-lora``: the student's vLLM outputs change after a weight sync, and equal HF's;
* ``ddp-2gpu``: a 2-process DDP training run where two GPUs exist.

On a machine without CUDA (or without vLLM) the rows that need it are reported as skipped, with the reason. The
table goes to stdout and to ``results/benchmarks/gpu-check.{md,json}`` (``--out`` another directory).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Name three colours.", "What is 12 plus 30?", "Write a haiku about rain.", "Explain what a CPU does.",
           "List four animals.", "Say hello in French.", "What is the capital of Italy?", "Count from 1 to 5."]  # fmt: skip


class Skip(Exception):
    """A check that cannot run here (no CUDA, no vLLM, one GPU), with the reason."""


def _need_cuda(n: int = 1) -> None:
    if not torch.cuda.is_available():
        raise Skip("no CUDA device")
    if torch.cuda.device_count() < n:
        raise Skip(f"{torch.cuda.device_count()} GPU(s); needs {n}")


def _need_vllm() -> None:
    _need_cuda()
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise Skip("vllm is not installed (pip install -e '.[vllm]')") from None


def _free_gpu() -> None:
    """Release an engine's GPU memory before the next row builds another."""
    import gc

    gc.collect()
    torch.cuda.empty_cache()


def _smollm2(cache: Path) -> str:
    from distill.models import SMOLLM2, resolve_source

    return resolve_source(SMOLLM2, cache)


def check_vllm_vs_hf(cache: Path) -> str:
    _need_vllm()
    from distill.engines import VLLMGenerator
    from distill.generation import HFGenerator, SamplingParams
    from distill.models import load_model

    path = _smollm2(cache)
    sp = SamplingParams(max_new_tokens=32)
    model, tok = load_model(path, dtype="float32")
    hf = HFGenerator(model.cuda().eval(), tok, batch_size=8).generate(PROMPTS, sp)
    del model
    engine = VLLMGenerator(path, tok, dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True)
    vl = engine.generate(PROMPTS, sp)
    del engine
    _free_gpu()
    same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(hf, vl, strict=True))
    if same < len(PROMPTS) - 1:  # fp32 on both sides: at most one near-tie may flip
        raise AssertionError(f"{same}/{len(PROMPTS)} prompts gave the same greedy tokens")
    return f"{same}/{len(PROMPTS)} prompts: identical greedy tokens (fp32, 32 new tokens)"


def check_train_bf16(method: str, cache: Path) -> str:
    _need_cuda()
    from distill.config import load_config
    from distill.methods import METHODS
    from distill.synthetic import write_synthetic_data
    from distill.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_data(Path(tmp) / "d.jsonl", 16)
        extra = ["gkd_lambda=0.5"] if METHODS[method].lam is None else []
        cfg = load_config(TrainConfig, None, [
            f"method={method}", "teacher.name=tiny-llama", "student.name=@teacher", "student.prune_layers=2",
            f"data.train_file={data}", "data.val_fraction=0.25", "optim.batch_size=4", "optim.max_steps=2",
            "mixed_precision=bf16", "teacher_sampling.max_new_tokens=8", "student_max_new_tokens=8",
            f"output_dir={tmp}/out", f"cache_dir={cache}", "resume=never", *extra,
        ])  # fmt: skip
        summary = train(cfg)
        rows = [json.loads(x) for x in (Path(tmp) / "out" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    if not all(torch.isfinite(torch.tensor(v)) for v in losses):
        raise AssertionError(f"non-finite loss: {losses}")
    return f"{summary['steps']} steps, loss {losses[0]:.4g} -> {losses[-1]:.4g}"


def check_chunked(name: str) -> str:
    _need_cuda()
    from distill.chunked import chunked_loss
    from distill.losses import LOSSES, compute_loss

    b, t, v, h = 2, 1024, 32768, 256  # two rows: a teacher and a student response (pairwise losses need both)
    g = torch.Generator(device="cuda").manual_seed(0)
    hs = torch.randn(b, t, h, device="cuda", generator=g).requires_grad_()
    ws = (torch.randn(v, h, device="cuda", generator=g) * 0.05).requires_grad_()
    ht, wt = torch.randn(b, t, h, device="cuda", generator=g), torch.randn(v, h, device="cuda", generator=g) * 0.05
    mask = torch.ones(b, t, dtype=torch.bool, device="cuda")
    extra: dict[str, Any] = {}
    if "labels" in LOSSES[name].batch_inputs:
        extra["labels"] = torch.randint(0, v, (b, t), device="cuda", generator=g)
    if "is_student_response" in LOSSES[name].batch_inputs:
        extra["is_student_response"] = torch.tensor([False, True], device="cuda")

    def peak(fn: Callable[[], torch.Tensor]) -> tuple[list[torch.Tensor], float]:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = fn()
        grads = torch.autograd.grad(loss, [hs, ws])
        torch.cuda.synchronize()
        return [loss.detach(), *grads], (torch.cuda.max_memory_allocated() - base) / 2**20

    naive, mem_naive = peak(lambda: compute_loss(name, hs @ ws.T, ht @ wt.T, mask=mask, **extra))
    chunk, mem_chunk = peak(lambda: chunked_loss(name, hs, ws, mask=mask, teacher_hidden=ht, teacher_weight=wt,
                                                  **extra))  # fmt: skip
    err = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(chunk, naive, strict=True))
    if not err <= 1e-4:  # NaN fails too
        raise AssertionError(f"relative error {err:.2e} (value or gradient)")
    return f"rel. err {err:.1e}; peak {mem_chunk:.0f} MiB vs naive {mem_naive:.0f} MiB ({mem_naive / mem_chunk:.1f}x less)"


def check_vllm_sync(lora: bool, cache: Path) -> str:
    _need_vllm()
    from distill.engines import engine_student
    from distill.generation import HFGenerator, SamplingParams
    from distill.models import apply_lora, load_model
    from distill.train_config import LoraConfig

    model, tok = load_model(_smollm2(cache), dtype="float32")
    model = model.cuda()
    if lora:
        model = apply_lora(LoraConfig(enabled=True, r=8, alpha=16, dropout=0.0), model)
    sp = SamplingParams(max_new_tokens=16)
    with tempfile.TemporaryDirectory() as tmp:
        holder: list = []
        engine = engine_student(holder, model, tok, Path(tmp), "vllm", dtype="float32")  # fp32, as the HF side
        engine.load_weights(model)
        before = [c[0].token_ids for c in engine.generate(PROMPTS, sp)]
        with torch.no_grad():  # a large "step" on the trainable weights
            for p in model.parameters():
                if p.requires_grad and p.dim() == 2:
                    p.add_(torch.randn_like(p) * 0.05)
        engine.load_weights(model)
        after = [c[0].token_ids for c in engine.generate(PROMPTS, sp)]
        hf = [c[0].token_ids for c in HFGenerator(model.eval(), tok, batch_size=8).generate(PROMPTS, sp)]
        del engine, holder
        _free_gpu()
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    agree = sum(a == b for a, b in zip(after, hf, strict=True))
    if not changed or agree < len(PROMPTS) - 1:
        raise AssertionError(f"outputs changed on {changed}/{len(PROMPTS)} prompts; equal to HF on {agree}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"changed on {changed}/{len(PROMPTS)} prompts after the sync; equal to HF on {agree}; {trainable:,} trainable"
    )


def check_ddp(cache: Path) -> str:
    _need_cuda(2)
    from distill.synthetic import write_synthetic_data

    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_data(Path(tmp) / "d.jsonl", 64)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m",
               "bench.cli", "train", "method=kd", "teacher.name=tiny-llama", f"data.train_file={data}",
               "data.val_fraction=0", "optim.batch_size=4", "optim.max_steps=3",
               f"output_dir={tmp}/out", f"cache_dir={cache}", "mixed_precision=bf16"]  # fmt: skip
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise AssertionError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}")
        steps = len((Path(tmp) / "out" / "metrics.jsonl").read_text().splitlines())
    return f"2 processes, {steps} steps"


def checks(cache: Path) -> list[tuple[str, Callable[[], str]]]:
    from distill.losses import LOSSES
    from distill.methods import METHODS

    rows: list[tuple[str, Callable[[], str]]] = [("vllm-vs-hf-greedy", lambda: check_vllm_vs_hf(cache))]
    rows += [(f"train-bf16:{m}", lambda m=m: check_train_bf16(m, cache)) for m in METHODS]
    rows += [(f"chunked-vs-naive:{n}", lambda n=n: check_chunked(n)) for n in sorted(LOSSES)]
    rows += [
        ("vllm-sync", lambda: check_vllm_sync(False, cache)),
        ("vllm-sync-lora", lambda: check_vllm_sync(True, cache)),
    ]
    rows.append(("ddp-2gpu", lambda: check_ddp(cache)))
    return rows


def run_checks(cache: Path, only: str | None = None) -> list[dict[str, Any]]:
    results = []
    for name, fn in checks(cache):
        if only and only not in name:
            continue
        t0 = time.perf_counter()
        try:
            status, detail = "pass", fn()
        except Skip as why:
            status, detail = "skip", str(why)
        except Exception as err:  # a failing check is a row, not the end of the run
            status, detail = "FAIL", f"{type(err).__name__}: {err}".splitlines()[0][:300]
            traceback.print_exc(file=sys.stderr)
        results.append(
            {"check": name, "status": status, "seconds": round(time.perf_counter() - t0, 1), "detail": detail}
        )
        print(f"{status:>4}  {name}: {detail}", file=sys.stderr, flush=True)
    return results


def render(results: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    device = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"no CUDA ({platform.processor() or 'CPU'})"
    )
    counts = {s: sum(r["status"] == s for r in results) for s in ("pass", "FAIL", "skip")}
    head = (f"**GPU check** ({device}; torch {torch.__version__}): {counts['pass']} passed, {counts['FAIL']} failed, "
            f"{counts['skip']} skipped\n\n")  # fmt: skip
    rows = [[r["check"], r["status"], r["seconds"], r["detail"]] for r in results]
    return head + tabulate(rows, headers=["check", "status", "s", "detail"], tablefmt="github") + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu-check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks"), help="where gpu-check.{md,json} go")
    p.add_argument("--only", help="run the checks whose name contains this")
    p.add_argument("--cache-dir", default=None, help="model cache (default: the user cache)")
    args = p.parse_args(argv)
    from distill.atomic import atomic_write_json, atomic_write_text
    from distill.models import default_cache_dir

    results = run_checks(Path(args.cache_dir) if args.cache_dir else default_cache_dir(), args.only)
    text = render(results)
    print(text)
    out = Path(args.out)
    atomic_write_text(out / "gpu-check.md", text)
    atomic_write_json(out / "gpu-check.json", {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                               else None, "results": results})  # fmt: skip
    print(f"wrote {out / 'gpu-check.md'} and {out / 'gpu-check.json'}")
    return 1 if any(r["status"] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
