"""A pinned loss trajectory per method (as torchtune pins its recipes'): three steps on tiny in-process models, on one
thread, compared with ``tests/fixtures/loss_trajectory.json``. A refactor that changes any method's numerics fails
here. Regenerate, after an intended change only, with ``UPDATE_TRAJECTORY=1 pytest tests/test_trajectory.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from distill.config import load_config
from distill.methods import METHODS
from distill.train import TrainConfig, train
from tests.train_helpers import base_overrides, write_train_data

PINNED = Path(__file__).parent / "fixtures" / "loss_trajectory.json"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_train_data(tmp_path_factory.mktemp("traj") / "train.jsonl", n=24)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_loss_trajectory_is_pinned(method, data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the reduction order, and so the low bits, do not depend on the machine
    try:
        cfg = load_config(TrainConfig, None, [
            *base_overrides(data, "tiny-llama", tmp_path), f"method={method}", "optim.max_steps=3",
            "distillm.phi_init=0.9", "validation=on", "eval_every=1", "checkpoint_at_end=false",
            "optim.batch_size=2", "teacher_sampling.max_new_tokens=6", "student_sampling.max_new_tokens=6",
        ])  # fmt: skip
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    got = {"loss": [r["loss"] for r in rows], "val_loss": [r.get("val_loss") for r in rows]}
    pinned = json.loads(PINNED.read_text()) if PINNED.exists() else {}
    if os.environ.get("UPDATE_TRAJECTORY"):
        pinned[method] = got
        PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    assert method in pinned, f"no pinned trajectory for {method}; run UPDATE_TRAJECTORY=1 pytest {__file__}"
    assert len(got["loss"]) == 3
    for key in ("loss", "val_loss"):
        assert got[key] == pytest.approx(pinned[method][key], rel=1e-5, abs=1e-7), (method, key)
