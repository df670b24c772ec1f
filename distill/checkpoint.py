"""Checkpoints for exact resume, written atomically.

``<output_dir>/checkpoints/step-00000012/`` holds:

* ``student/``: the student (``save_pretrained``, safetensors) or, with LoRA, its adapters;
* ``optimizer.pt``, ``scheduler.pt``;
* ``sampler-rank<r>.pt``: each rank's sampler state (replay buffer, φ, the epoch's generated pairs) and the
  α-curriculum state;
* ``rng-rank<r>.pt``: every RNG state (python, torch; CUDA where present);
* ``trainer_state.json``: the step, tokens seen, elapsed seconds, the teacher generation already charged, the
  resolved config and its hash (a resume with another config is refused, naming the keys that differ).

A directory appears under its final name only once complete (``atomic_dir``), so ``resume=auto`` takes the newest
directory whose name parses. Data order and every random decision of the samplers are functions of
``(seed, step)``, so the step is the position in the data.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distill.atomic import atomic_dir
from distill.config import config_to_dict
from distill.vision import save_tokenizer

if TYPE_CHECKING:
    from distill.train_config import TrainConfig

_STEP_RE = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    student,
    optimizer,
    scheduler,
    trainer_state: dict[str, Any],
    rank_states: list[dict[str, Any]],
    keep: int = 2,
) -> Path:
    """Write one checkpoint atomically (main process). ``rank_states[r]`` = ``{"sampler": ..., "rng": ...}``."""
    dest = checkpoint_dir(output_dir, step)
    with atomic_dir(dest) as tmp:
        student.save_pretrained(tmp / "student", safe_serialization=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        for r, st in enumerate(rank_states):
            torch.save(st["sampler"], tmp / f"sampler-rank{r}.pt")
            torch.save(st["rng"], tmp / f"rng-rank{r}.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=2) + "\n")
    if keep > 0:
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def load_rank_state(ckpt: Path, rank: int) -> dict[str, Any]:
    return {
        "sampler": torch.load(ckpt / f"sampler-rank{rank}.pt", weights_only=False),
        "rng": torch.load(ckpt / f"rng-rank{rank}.pt", weights_only=False),
    }


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "trainer_state.json").read_text())


# --------------------------------------------------------------------------------------------- the trainer's state
# (the trainer's whole resumable state: student, optimizer, scheduler, sampler and curriculum per rank, RNG)


def save_training_state(
    cfg, out_dir, step, acc, student, optimizer, scheduler, sampler, losses, state, gather_object
) -> None:
    mine = {
        "sampler": {
            "sampler": sampler.state_dict(),
            "curriculum": losses.hook.state_dict(),  # the loss hook's state (DistiLLM-2's α curriculum)
        },
        "rng": rng_state(),
    }
    all_states = gather_object([mine])
    if acc.is_main_process:
        save_checkpoint(
            out_dir,
            step,
            student=acc.unwrap_model(student),
            optimizer=optimizer,
            scheduler=scheduler,
            trainer_state={**state, "config_sha": config_sha(cfg), "config": _plain(config_to_dict(cfg))},
            rank_states=all_states,
            keep=cfg.keep_checkpoints,
        )
    acc.wait_for_everyone()


def restore_training_state(
    path: Path, acc, student, optimizer, scheduler, sampler, losses, rank
) -> tuple[int, dict[str, Any]]:
    from safetensors.torch import load_file

    model = acc.unwrap_model(student)
    files = sorted((path / "student").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"checkpoint {path} has no student weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(f))
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, weights)
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = {k for k in missing if "lm_head" in k}
        if (set(missing) - tied or unexpected) and hasattr(model.config, "vision_config"):
            # a VLM's save_pretrained renames its keys (LLaVA's legacy layout): load back through from_pretrained
            saved = type(model).from_pretrained(path / "student", dtype=next(model.parameters()).dtype)
            missing, unexpected = model.load_state_dict(saved.state_dict(), strict=False)
            tied = {k for k in missing if "lm_head" in k}
        if set(missing) - tied or unexpected:
            raise ValueError(
                f"checkpoint {path} does not match the student: missing {missing}, unexpected {unexpected}"
            )
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rank_state = load_rank_state(path, rank)
    sampler.load_state_dict(rank_state["sampler"]["sampler"])
    losses.hook.load_state_dict(rank_state["sampler"]["curriculum"])
    set_rng_state(rank_state["rng"])
    state = load_trainer_state(path)
    return int(state.pop("step")), state


#: config keys that do not shape the trajectory (a resumed run may change them)
NOT_TRAJECTORY = (
    "resume", "tensorboard", "save_every", "save_every_min", "keep_checkpoints", "checkpoint_at_end", "output_dir",
)  # fmt: skip


def config_sha(cfg: TrainConfig) -> str:
    """Hash of everything that shapes the trajectory (not ``resume``, logging or checkpoint cadence)."""
    d = config_to_dict(cfg)
    for key in NOT_TRAJECTORY:
        d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_snapshot(dest: Path, model, tok, state: dict[str, Any]) -> None:
    """Weights only (a LoRA student merged into a copy), with the token count it was taken at."""
    if hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tok, tmp)
        (tmp / "snapshot.json").write_text(json.dumps({"tokens": state["tokens"], "steps": state["steps"]}))


def require_resume_dir(resume: str) -> None:
    """``resume=<dir>``: the checkpoint directory must exist (``auto`` and ``never`` name none)."""
    if resume not in ("auto", "never") and not Path(resume).is_dir():
        raise FileNotFoundError(f"resume checkpoint not found: {resume}")


def check_resumable(path: Path, cfg: TrainConfig) -> None:
    """Refuse to resume from checkpoint ``path`` unless it was written with this config; the error names the keys
    that differ from the checkpoint's own saved config (a checkpoint older than that: the ``config.yaml`` next to its
    ``checkpoints/`` directory)."""
    from distill.train_config import TrainingError

    if not path.is_dir():
        raise FileNotFoundError(f"resume checkpoint not found: {path}")
    saved = load_trainer_state(path)
    if saved.get("config_sha") == config_sha(cfg):
        return
    diff = config_diff(saved.get("config") or path.parent.parent / "config.yaml", cfg)  # older checkpoints: the yaml
    what = f" ({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''})" if diff else ""
    raise TrainingError(
        f"checkpoint {path} was written with a different config{what}; use resume=never or a new output_dir"
    )


def _plain(d: Any) -> Any:
    return json.loads(json.dumps(d, default=str))


def config_diff(saved: dict[str, Any] | Path, cfg: TrainConfig) -> list[str]:
    """``key: old -> new`` for every trajectory key where the saved config (the checkpoint's own, or a
    ``config.yaml``) and ``cfg`` differ."""
    import yaml

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    if isinstance(saved, Path):
        if not saved.is_file():
            return []
        saved = yaml.safe_load(saved.read_text()) or {}
    old, new = flat(_plain(saved)), flat(_plain(config_to_dict(cfg)))
    keys = sorted(k for k in set(old) | set(new) if k.split(".")[0] not in NOT_TRAJECTORY)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
