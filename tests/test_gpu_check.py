"""``scripts/gpu-check.sh`` on a machine without CUDA: it runs, and reports every CUDA row as skipped."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from bench.gpu_check import ROOT, checks


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: run scripts/gpu-check.sh itself")
def test_gpu_check_runs_on_cpu_with_every_cuda_row_skipped(tmp_path):
    out = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "gpu-check.json").read_text())
    names = [r["check"] for r in result["results"]]
    assert names == [name for name, _ in checks(tmp_path)] and len(names) > 20
    assert all(r["status"] == "skip" and r["detail"].startswith(("no CUDA", "vllm")) for r in result["results"])
    md = (tmp_path / "gpu-check.md").read_text()
    assert "0 passed, 0 failed" in md and "train-bf16:distillm2" in md and "| ddp-2gpu" in md
