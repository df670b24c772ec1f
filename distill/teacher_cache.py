"""On-disk teacher cache: top-k teacher log-probabilities for fixed rows, computed once, reused everywhere.

Fixed rows (ground-truth data and teacher responses) have the same teacher distribution at every epoch and for every
method, so the teacher forward pass can be paid once. Each row is stored under

    <cache>/teacher-topk/<key>/<row hash>.safetensors

with ``key`` covering the teacher (its resolved model config), the tokenizer (its vocabulary) and ``k``, and the row
hash covering its token ids. Only the response positions are stored (``k`` int32 ids, ``k`` float32 log-probs and the
log of the remaining mass per token). Losses consume them as a :class:`~distill.sparse.SparseTarget`; the
approximation error of top-k targets is documented in :mod:`distill.sparse`.

Micro-batches that contain student-generated rows run the teacher online (those rows change every time).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from distill.atomic import atomic_path
from distill.data import Row, collate, shift_targets
from distill.sparse import SparseTarget, sparse_target_from_logits


def cache_key(teacher_cfg: dict, tokenizer, k: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(teacher_cfg, sort_keys=True, default=str).encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(k).encode())
    return h.hexdigest()[:24]


def row_hash(row: Row) -> str:
    return hashlib.sha256(json.dumps([row.prompt_ids, row.response_ids]).encode()).hexdigest()[:32]


class TeacherCache:
    def __init__(self, root: str | Path, teacher, tokenizer, teacher_cfg: dict, k: int, vocab: int):
        self.dir = Path(root) / "teacher-topk" / cache_key(teacher_cfg, tokenizer, k)
        self.teacher, self.pad_id, self.k, self.vocab = teacher, tokenizer.pad_token_id, k, vocab
        self.hits = self.misses = 0

    def _path(self, row: Row) -> Path:
        return self.dir / f"{row_hash(row)}.safetensors"

    def _compute(self, rows: list[Row]) -> None:
        batch = collate(rows, self.pad_id)
        device = next(self.teacher.parameters()).device
        with torch.no_grad():
            logits = self.teacher(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits[:, :-1, : self.vocab]
        _, mask = shift_targets(batch["labels"])
        target = sparse_target_from_logits(logits, self.k, mask.to(device))
        for i, row in enumerate(rows):
            pos = mask[i].nonzero().squeeze(1)
            tensors = {
                "indices": target.indices[i, pos].to(torch.int32).cpu().contiguous(),
                "logprobs": target.logprobs[i, pos].float().cpu().contiguous(),
                "log_rest": target.log_rest[i, pos].float().cpu().contiguous(),
            }
            from safetensors.torch import save_file

            with atomic_path(self._path(row), suffix=".safetensors") as tmp:
                save_file(tensors, str(tmp))

    def target(self, rows: list[Row], width: int) -> SparseTarget:
        """A ``[B, width]`` SparseTarget for a collated micro-batch of fixed rows (``width`` = shifted length)."""
        missing = [r for r in rows if not self._path(r).is_file()]
        self.misses += len(missing)
        self.hits += len(rows) - len(missing)
        if missing:
            self._compute(missing)
        b, k = len(rows), self.k
        # off-response positions are never trained: store a valid uniform placeholder there
        # host: read from disk on the CPU; the loss step moves the target to the batch's device
        indices = torch.arange(k).expand(b, width, k).clone()  # host
        logprobs = torch.full((b, width, k), -math.log(self.vocab))  # host
        log_rest = torch.full((b, width), math.log1p(-k / self.vocab) if k < self.vocab else -math.inf)  # host
        for i, row in enumerate(rows):
            stored = load_file(str(self._path(row)))
            start = len(row.prompt_ids) - 1
            n = min(stored["indices"].shape[0], width - start)
            indices[i, start : start + n] = stored["indices"][:n].long()
            logprobs[i, start : start + n] = stored["logprobs"][:n]
            log_rest[i, start : start + n] = stored["log_rest"][:n]
        return SparseTarget(indices, logprobs, log_rest, self.vocab)
