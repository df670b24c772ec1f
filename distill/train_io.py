"""The trainer's files: ``metrics.jsonl`` (one line per step; truncated to the checkpoint on resume), TensorBoard,
and at the end the final model plus ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.atomic import atomic_dir, atomic_write_json, atomic_write_text
from distill.train_config import TrainingError
from distill.vision import save_tokenizer

if TYPE_CHECKING:
    from distill.train_config import TrainConfig


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric rows logged after the checkpoint (they are recomputed identically)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def tensorboard_writer(cfg: TrainConfig, out_dir: Path):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError("tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out_dir / "tensorboard"))


def finish(cfg, out_dir, acc, student, tok, state, total) -> dict[str, Any]:
    """Save the final model (a LoRA student merged) and ``summary.json``; return the summary."""
    acc.wait_for_everyone()
    summary = {
        "method": cfg.method,
        "steps": total,
        "tokens": state["tokens"],
        "wall_s": state["elapsed"],
        "generation_s": state["generation_s"],
        "train_s": state["train_s"],
        "tokens_per_s": state["tokens"] / max(state["elapsed"], 1e-9),
        "generation_share": state["generation_s"] / max(state["elapsed"], 1e-9),
        "setup_generation_s": state.get("teacher_generation_s", 0.0),
        "snapshots": [
            json.loads((p / "snapshot.json").read_text()) | {"path": str(p)}
            for p in sorted((out_dir / "snapshots").glob("tokens-*"), key=lambda p: int(p.name.split("-")[1]))
        ],
        "val_loss": state.get("val_loss"),
        "truncated": state.get("truncated"),
        "final": str(out_dir / "final"),
    }
    if acc.is_main_process:
        model = acc.unwrap_model(student)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        with atomic_dir(out_dir / "final") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            save_tokenizer(tok, tmp)
        atomic_write_json(out_dir / "summary.json", summary)
    return summary
