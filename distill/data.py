"""Training data: prompt/response examples, tokenization with prompt masking, and collation.

A training row is a prompt and a response, both as token ids, plus where the response came from
(``data`` = ground truth, ``teacher`` = teacher-generated, ``student`` = student-generated). Collation lays a row
out as ``[prompt ; response]`` with labels ``-100`` on the prompt and on padding, so the causal shift
``logits[:, :-1]`` vs ``labels[:, 1:]`` trains exactly the response tokens. Student-generated responses use the same
layout, which fixes the reference DistiLLM code's unshifted SGO labels (methods.md §2.6 item 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from distill.generation import Prompt, render_prompt
from distill.seeds import derive_seed
from distill.vision import (
    PromptIds,
    batch_pixels,
    expand_image_tokens,
    image_of,
    images_of,
    register_image,
    with_placeholder,
)

if TYPE_CHECKING:
    from distill.train_config import DataConfig

IGNORE_INDEX = -100
Source = Literal["data", "teacher", "student"]


@dataclass
class Example:
    """A prompt (string or chat messages), its ground-truth response (may be absent: prompt-only data) and, for a
    vision-language model, the path of its image."""

    prompt: Prompt
    response: str | None = None
    image: str | None = None


@dataclass
class Row:
    """One tokenized training sequence (and its image: by default the one its prompt ids carry)."""

    prompt_ids: list[int]
    response_ids: list[int]
    source: Source = "data"
    image: str | None = None

    def __post_init__(self) -> None:
        if self.image is None:
            self.image = image_of(self.prompt_ids)

    @property
    def is_student(self) -> bool:
        return self.source == "student"


def read_examples(path: str | Path, what: str = "training") -> list[Example]:
    """Read a JSONL file of ``{"prompt": ..., "response": ...}`` rows (``response`` optional). ``prompt`` is a string
    or a list of chat messages, ``response`` a string, ``image`` (optional) a path relative to the file's directory;
    anything else is refused in one line naming the file and line. ``what`` names the file's role in errors
    (training, validation)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} data file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not UTF-8 text (byte {err.start}); a JSONL data file must be UTF-8") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}:{n}: invalid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{p}:{n}: a row must be a JSON object with a 'prompt', got {type(obj).__name__}")
        if "prompt" not in obj:
            raise ValueError(f"{p}:{n}: row has no 'prompt' field")
        prompt, response = obj["prompt"], obj.get("response")
        if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt))):
            raise ValueError(f"{p}:{n}: 'prompt' must be a string or a list of chat messages, got {prompt!r:.40}")
        if response is not None and not isinstance(response, str):
            raise ValueError(f"{p}:{n}: 'response' must be a string, got {response!r:.40}")
        image = obj.get("image")
        if image is not None:
            if not isinstance(image, str):
                raise ValueError(f"{p}:{n}: 'image' must be a path (a string), got {image!r:.40}")
            image = str((p.parent / image).resolve())
            if not Path(image).is_file():
                raise ValueError(f"{p}:{n}: image file not found: {image}")
        rows.append(Example(prompt=prompt, response=response, image=image))
    if not rows:
        raise ValueError(f"{what} data file is empty: {p}")
    return rows


def encode_prompt(
    tokenizer, prompt: Prompt, max_prompt_len: int, chat: bool = True, image: str | None = None
) -> list[int]:
    """Render (chat template where the tokenizer has one) and tokenize; long prompts keep their end. An image
    prompt (``distill/vision.py``) gets its placeholder expanded to the image's tokens and is never cut: one longer
    than ``max_prompt_len`` is refused. It comes back as :class:`PromptIds`, which remember the image."""
    inputs = images_of(tokenizer)
    if image is not None:
        if inputs is None:
            raise ValueError(f"a row has an image ({Path(image).name}) but the model is text-only; use a VLM")
        prompt = with_placeholder(prompt)
    text, special = render_prompt(tokenizer, prompt, chat)
    ids = tokenizer(text, add_special_tokens=not special)["input_ids"]
    if image is None:
        return ids[-max_prompt_len:]
    ids = expand_image_tokens(ids, inputs)  # type: ignore[arg-type]
    if len(ids) > max_prompt_len:
        raise ValueError(
            f"an image prompt has {len(ids)} tokens ({inputs.tokens_per_image} for the image), more than "  # type: ignore[union-attr]
            f"data.max_prompt_len={max_prompt_len}"
        )
    register_image(image, inputs)  # type: ignore[arg-type]
    return PromptIds(ids, image)


#: warn when more than this fraction of the training prompts or responses is cut
TRUNCATION_WARN = 0.05


def truncation(tokenizer, examples: list[Example], cfg: DataConfig) -> dict[str, int]:
    """How many training prompts are longer than ``max_prompt_len`` (they keep their end) and how many responses
    do not fit in ``max_len`` after their prompt (they keep their start), as :func:`encode_example` cuts them."""
    prompts = responses = with_response = 0
    inputs = images_of(tokenizer)
    for e in examples:
        image = e.image is not None and inputs is not None  # its placeholder becomes the image's tokens
        text, special = render_prompt(tokenizer, with_placeholder(e.prompt) if image else e.prompt, cfg.chat)
        n_prompt = len(tokenizer(text, add_special_tokens=not special)["input_ids"])
        n_prompt += inputs.tokens_per_image - 1 if image else 0  # type: ignore[union-attr]
        prompts += n_prompt > cfg.max_prompt_len
        if e.response is not None:
            with_response += 1
            n_response = len(tokenizer(e.response, add_special_tokens=False)["input_ids"]) + 1  # + EOS
            responses += n_response > cfg.max_len - min(n_prompt, cfg.max_prompt_len)
    return {"examples": len(examples), "prompts": prompts, "with_response": with_response, "responses": responses}


def truncation_warning(counts: dict[str, int], cfg: DataConfig) -> str | None:
    """A one-line warning when more than :data:`TRUNCATION_WARN` of the prompts or responses were cut."""
    parts = []
    if counts["examples"] and counts["prompts"] > TRUNCATION_WARN * counts["examples"]:
        parts.append(f"{counts['prompts']} of {counts['examples']} prompts (data.max_prompt_len={cfg.max_prompt_len})")
    if counts["with_response"] and counts["responses"] > TRUNCATION_WARN * counts["with_response"]:
        parts.append(f"{counts['responses']} of {counts['with_response']} responses (data.max_len={cfg.max_len})")
    return f"warning: truncated {' and '.join(parts)}" if parts else None


def encode_response(tokenizer, response: str, max_response_len: int) -> list[int]:
    """Response tokens followed by EOS (so the student learns to stop), truncated to ``max_response_len``."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:max_response_len]


def encode_example(tokenizer, ex: Example, max_prompt_len: int, max_len: int, chat: bool = True) -> Row:
    if ex.response is None:
        raise ValueError("this example has no response; prompt-only data needs a generating method")
    prompt_ids = encode_prompt(tokenizer, ex.prompt, max_prompt_len, chat, ex.image)
    return Row(prompt_ids, encode_response(tokenizer, ex.response, max_len - len(prompt_ids)), "data")


def collate(rows: list[Row], pad_id: int, max_len: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (-100 off-response) and ``is_student_response``;
    plus ``pixel_values`` for image rows."""
    if not rows:
        raise ValueError("cannot collate an empty batch")
    seqs = [(r.prompt_ids + r.response_ids)[:max_len] if max_len else r.prompt_ids + r.response_ids for r in rows]
    width = max(len(s) for s in seqs)
    # host: a batch is collated on the CPU; the trainer moves each micro-batch to its device
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # host
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # host
    attn = torch.zeros((len(rows), width), dtype=torch.long)  # host
    for i, (row, seq) in enumerate(zip(rows, seqs, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)  # host
        attn[i, : len(seq)] = 1
        start = len(row.prompt_ids)
        if len(seq) > start:
            labels[i, start : len(seq)] = torch.tensor(seq[start:])  # host
    batch = {
        "input_ids": input_ids,
        "attention_mask": attn,
        "labels": labels,
        "is_student_response": torch.tensor([r.is_student for r in rows], dtype=torch.bool),  # host
    }
    pixel_values = batch_pixels([r.image for r in rows])
    if pixel_values is not None:
        batch["pixel_values"] = pixel_values
    return batch


def model_inputs(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The forward's inputs of a collated batch on ``device`` (``pixel_values`` for image rows)."""
    keys = ("input_ids", "attention_mask", "pixel_values")
    return {k: batch[k].to(device) for k in keys if k in batch}


def shift_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for ``logits[:, :-1]``: ``(labels[:, 1:], mask)``. Position t predicts token t + 1."""
    target = labels[:, 1:]
    return target, target != IGNORE_INDEX


def count_target_tokens(rows: list[Row], max_len: int | None = None) -> int:
    total = 0
    for r in rows:
        n = len(r.prompt_ids) + len(r.response_ids)
        if max_len:
            n = min(n, max_len)
        total += max(0, n - len(r.prompt_ids))
    return total


def split_examples(cfg: DataConfig, seed: int) -> tuple[list[Example], list[Example]]:
    """The training examples and the validation ones: ``cfg.val_file``, or a seeded ``val_fraction`` of the data."""
    train = read_examples(cfg.train_file)
    if cfg.limit:
        train = train[: cfg.limit]
    if cfg.val_file:
        return train, read_examples(cfg.val_file, "validation")
    n_val = int(len(train) * cfg.val_fraction)
    # host: a seeded permutation, read back as a list
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(derive_seed(seed, "val"))).tolist()
    val = {*order[:n_val]}
    return [e for i, e in enumerate(train) if i not in val], [e for i, e in enumerate(train) if i in val]


def validation_rows(tok, val_ex: list[Example], cfg: DataConfig, required_by: str | None = None) -> list[Row]:
    """The validation examples that have a response, encoded. ``required_by``: a method whose schedule reads the
    validation loss (DistiLLM's), refused in one line when there are none."""
    if required_by is not None:
        require_validation(val_ex, cfg, required_by)
    return [
        encode_example(tok, e, cfg.max_prompt_len, cfg.max_len, cfg.chat) for e in val_ex if e.response is not None
    ]


def require_validation(val_ex: list[Example], cfg: DataConfig, method: str) -> None:
    """Refuse, in one line, a method whose schedule reads the validation loss when no validation row has a response
    (checked before any model is loaded)."""
    if not any(e.response is not None for e in val_ex):
        source = f"data.val_file={cfg.val_file}" if cfg.val_file else f"data.val_fraction={cfg.val_fraction}"
        raise ValueError(
            f"method {method!r} adapts to the validation loss, but {source} gives no validation row with a "
            "response; set data.val_file, or raise data.val_fraction"
        )
