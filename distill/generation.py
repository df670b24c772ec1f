"""Generation backends behind one interface: ``generate(prompts, sampling) -> completions``.

* :class:`HFGenerator` (default, CPU or GPU): batched ``model.generate`` with left padding and the KV cache.
  Sampling uses an inverse-CDF logits processor with one random stream per (prompt, sample): the output for a
  prompt depends only on the seed, the prompt and the sample index, never on the batch it landed in. This makes
  runs deterministic under a seed and batched output equal to unbatched output (greedy and sampled, up to
  floating-point ties). On CPU it is also 2.2x faster than HF's ``torch.multinomial`` path (sizing.md §2).
* vLLM, the trainer's engines for student generation and ``make_generator`` (a backend by name): ``distill/engines.py``.

Prompts are strings (one user turn) or chat message lists. The tokenizer's chat template is applied where it
has one and ``chat`` is on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from distill.atomic import atomic_write_json, atomic_write_jsonl
from distill.config import config_to_dict, require
from distill.seeds import derive_seed

if TYPE_CHECKING:
    from distill.models import ModelConfig
    from distill.train_config import TrainConfig

Prompt = str | list[dict[str, str]]


@dataclass
class SamplingParams:
    """Decoding settings shared by every backend (and usable as a config section)."""

    temperature: float = field(default=0.0, metadata={"help": "0 means greedy", "min": 0.0})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass", "min": 0.0, "exclusive_min": True, "max": 1.0})
    top_k: int = field(default=0, metadata={"help": "0 disables top-k", "min": 0})
    max_new_tokens: int = field(default=128, metadata={"help": "new tokens per completion", "min": 1})
    stop: list[str] = field(default_factory=list, metadata={"help": "stop strings (excluded from the text)"})
    seed: int = field(default=0, metadata={"help": "sampling seed", "min": 0})
    n: int = field(default=1, metadata={"help": "samples per prompt", "min": 1})
    no_repeat_ngram_size: int = field(default=0, metadata={"help": "DistiLLM eval uses 6; HF backend only", "min": 0})

    def __post_init__(self) -> None:
        require(all(isinstance(s, str) and s for s in self.stop), f"stop strings must be non-empty: {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]


class Generator(Protocol):
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[Completion]]:
        """One list of ``sampling.n`` completions per prompt, in prompt order."""
        ...


def render_prompt(tokenizer, prompt: Prompt, chat: bool = True) -> tuple[str, bool]:
    """Text to feed the model, and whether it already contains the special tokens (chat template)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if isinstance(prompt, list):
        if not has_template:
            raise ValueError("a chat-message prompt needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), True
    if chat and has_template:
        msgs = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), True
    return prompt, False


def stream_seed(seed: int, prompt_text: str, sample_index: int) -> int:
    """A 63-bit seed for one (prompt, sample) stream, independent of batching and order."""
    return derive_seed(seed, sample_index, prompt_text)


def _filter_logits(scores: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    scores = scores.float() / sampling.temperature
    if sampling.top_k > 0 and sampling.top_k < scores.shape[-1]:
        kth = torch.topk(scores, sampling.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_scores, idx = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # drop a token when the mass before it already reaches top_p (always keeps the most likely token)
        drop_sorted = (probs.cumsum(-1) - probs) >= sampling.top_p
        scores = scores.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted), float("-inf"))
    return scores


class InverseCDFSampler:
    """Logits processor that draws the next token itself and returns -inf everywhere else.

    It runs under ``do_sample=False`` (HF then takes the argmax, i.e. our draw). Each row has its own
    ``torch.Generator``, seeded per (prompt, sample), so draws do not depend on the batch composition.
    """

    def __init__(self, sampling: SamplingParams, row_seeds: list[int]):
        self.sampling = sampling
        self.generators = [torch.Generator().manual_seed(s) for s in row_seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(_filter_logits(scores, self.sampling), dim=-1)
        cdf = probs.cumsum(-1)
        # u in (0, total]: the first index with cdf >= u always has positive probability
        # host: the draws come from CPU generators (one per row, batch-independent), then move to the logits' device
        r = torch.cat([torch.rand(1, generator=g) for g in self.generators]).unsqueeze(-1).to(cdf.device)
        idx = torch.searchsorted(cdf, (1.0 - r) * cdf[:, -1:]).clamp_max(cdf.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, idx, 0.0)


class StopOnStrings:
    """Stopping criterion: a row is done once its generated text contains one of the stop strings."""

    def __init__(self, tokenizer, stop: list[str], prompt_len: int):
        self.tokenizer, self.stop, self.prompt_len = tokenizer, stop, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool, device=input_ids.device)


def _truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class HFGenerator:
    """Batched HF ``generate`` with left padding and the KV cache."""

    def __init__(self, model, tokenizer, batch_size: int = 16, chat: bool = True, progress: str | None = None):
        """``progress``: a tqdm description to show a bar over batches (None: silent)."""
        self.model, self.tokenizer, self.batch_size, self.chat = model, tokenizer, batch_size, chat
        self.progress = progress
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before generating")

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[Completion]]:
        return self.generate_ids(self.encode_prompts(prompts), sampling)

    def encode_prompts(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Render (chat template) and tokenize prompts exactly as :meth:`generate` does."""
        ids = []
        for p in prompts:
            text, special = render_prompt(self.tokenizer, p, self.chat)
            ids.append(self.tokenizer(text, add_special_tokens=not special)["input_ids"])
        return ids

    def generate_ids(self, prompt_ids: Sequence[list[int]], sampling: SamplingParams) -> list[list[Completion]]:
        """Generate from already tokenized prompts (the trainer's path: prompts exactly as trained on)."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("cannot generate from an empty prompt")
        rows = [(i, j) for i in range(len(prompt_ids)) for j in range(sampling.n)]
        # longest first so batches pad little; results are put back in prompt order
        rows.sort(key=lambda r: -len(prompt_ids[r[0]]))
        keys = [",".join(map(str, p)) for p in prompt_ids]
        out: list[list[Completion | None]] = [[None] * sampling.n for _ in prompt_ids]
        eos_ids = self._eos_ids()
        was_training = self.model.training
        self.model.eval()
        from tqdm.auto import tqdm

        starts = range(0, len(rows), self.batch_size)
        try:
            for start in tqdm(starts, desc=self.progress, disable=self.progress is None, leave=False):
                chunk = rows[start : start + self.batch_size]
                enc = self._pad_left([prompt_ids[i] for i, _ in chunk])
                images = [getattr(prompt_ids[i], "image", None) for i, _ in chunk]
                extra: dict[str, Any] = {}
                if any(images):  # a VLM's prompt: generation is conditioned on its image, and never emits <image>
                    from distill.vision import batch_pixels, images_of

                    enc["pixel_values"] = batch_pixels(images).to(self.model.device)  # type: ignore[union-attr]
                    extra["suppress_tokens"] = [images_of(self.tokenizer).image_token_id]  # type: ignore[union-attr]
                prompt_len = enc["input_ids"].shape[1]
                processors, stopping = LogitsProcessorList(), StoppingCriteriaList()
                if not sampling.greedy:
                    seeds = [stream_seed(sampling.seed, keys[i], j) for i, j in chunk]
                    processors.append(InverseCDFSampler(sampling, seeds))
                if sampling.stop:
                    stopping.append(StopOnStrings(self.tokenizer, sampling.stop, prompt_len))
                with torch.no_grad():
                    gen = self.model.generate(
                        **enc,
                        do_sample=False,
                        max_new_tokens=sampling.max_new_tokens,
                        no_repeat_ngram_size=sampling.no_repeat_ngram_size or None,
                        logits_processor=processors,
                        stopping_criteria=stopping,
                        pad_token_id=self.tokenizer.pad_token_id,
                        eos_token_id=eos_ids,
                        use_cache=True,
                        temperature=None,
                        top_p=None,
                        top_k=None,
                        **extra,
                    )
                for (i, j), ids in zip(chunk, gen[:, prompt_len:].tolist(), strict=True):
                    out[i][j] = self._completion(ids, eos_ids, sampling)
        finally:
            self.model.train(was_training)
        return out  # type: ignore[return-value]

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _pad_left(self, enc: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(e) for e in enc)
        pad = self.tokenizer.pad_token_id
        # host: built here, moved to the model's device below
        input_ids = torch.tensor([[pad] * (width - len(e)) + list(e) for e in enc], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], dtype=torch.long)  # host
        return {"input_ids": input_ids.to(self.model.device), "attention_mask": mask.to(self.model.device)}

    def _completion(self, ids: list[int], eos_ids: list[int], sampling: SamplingParams) -> Completion:
        finished = False
        for k, tok in enumerate(ids):
            if tok in eos_ids:
                ids, finished = ids[: k + 1], True
                break
        # strip right padding left by rows that finished earlier than the batch
        pad = self.tokenizer.pad_token_id
        while ids and ids[-1] == pad and pad not in eos_ids:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if sampling.stop:
            text, hit = _truncate_at_stop(text, sampling.stop)
            if hit:
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                finished = True
        return Completion(text=text, token_ids=ids, finish_reason="stop" if finished else "length")


# --------------------------------------------------------------------------------------------- in training
# (the teacher's responses, kept on disk per epoch)


def teacher_epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the teacher's samples in ``epoch``: the configured seed in epoch 0 (the responses a suite's
    ``responses`` stage writes, which KD trains on), a seed derived from it in each later epoch."""
    return seed if epoch == 0 else derive_seed(seed, "teacher", epoch)


def teacher_sampling_for(sp: SamplingParams, prompts: Sequence[list[int]], max_len: int | None) -> SamplingParams:
    """The teacher's sampling for a prompt set: one sample, at most ``max_len`` minus the longest prompt new tokens
    (None: no cap), so that every response fits the training length after its prompt."""
    cap = sp.max_new_tokens if max_len is None else max(1, min(sp.max_new_tokens, max_len - max(map(len, prompts))))
    return replace(sp, max_new_tokens=cap, n=1)


def teacher_generation_key(
    teacher: ModelConfig, tok, prompts: Sequence[list[int]], sp: SamplingParams, epoch: int
) -> str:
    """The cache key of the teacher's responses to ``prompts`` in ``epoch``: teacher, tokenizer, prompts, sampling."""
    h = hashlib.sha256()
    h.update(json.dumps(config_to_dict(teacher), sort_keys=True).encode())
    h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(json.dumps(list(prompts)).encode())
    images = [getattr(p, "image", None) for p in prompts]
    if any(images):  # image prompts: the same question about two images is two prompts (by the image's bytes)
        h.update(
            json.dumps([hashlib.sha256(Path(i).read_bytes()).hexdigest() if i else None for i in images]).encode()
        )
    h.update(json.dumps({**vars(sp), "seed": teacher_epoch_seed(sp.seed, epoch)}, sort_keys=True).encode())
    return h.hexdigest()[:24]


class TeacherResponses:
    """The teacher's responses to a prompt set, one file per epoch, generated once and kept on disk: the one code
    path for teacher samples.

    A suite's ``responses`` stage writes epoch 0 of its train prompts into its own ``generations/`` directory, and
    every training stage of the suite is given that directory (``TrainConfig.teacher_responses``): SeqKD trains on
    exactly the responses KD trains on, and DistiLLM-2's batched sampler reads epoch 0 from there and adds its later
    epochs next to it. A standalone ``train`` keeps them under ``<cache_dir>/generations``. Files are named by
    :func:`teacher_generation_key` and written atomically, with the seconds they took beside them.

    Their seed comes from ``teacher_sampling.seed`` and the epoch (:func:`teacher_epoch_seed`), not from the training
    seed: the teacher does not change, so every method and training seed trains on the same teacher samples.
    """

    def __init__(self, teacher_cfg: ModelConfig, teacher, tok, prompts: list[list[int]], sp: SamplingParams,
                 root: str | Path, batch_size: int, timer: dict | None = None, given: bool = False):  # fmt: skip
        self.teacher_cfg, self.teacher, self.tok, self.prompts, self.sp = teacher_cfg, teacher, tok, prompts, sp
        self.root, self.batch_size, self.timer = Path(root), batch_size, timer if timer is not None else {}
        #: the directory was given (a suite's responses stage), so epoch 0 is expected to be there
        self.given = given
        #: generation key -> seconds, charged once per run (kept in checkpoints: a resumed run neither loses the cost
        #: of an epoch its sampler already holds nor counts a replayed one twice)
        self.charged: dict[str, float] = {}

    @classmethod
    def for_run(cls, cfg: TrainConfig, teacher, tok, prompts: list[list[int]], timer: dict) -> TeacherResponses:
        """A training run's: its teacher and sampling (capped to ``data.max_len``), in ``cfg.teacher_responses``
        (a suite's responses stage) or else ``<cache_dir>/generations``."""
        from distill.models import default_cache_dir

        sp = teacher_sampling_for(cfg.teacher_sampling, prompts, cfg.data.max_len)
        root = cfg.teacher_responses or Path(cfg.cache_dir or default_cache_dir()) / "generations"
        return cls(cfg.teacher, teacher, tok, prompts, sp, root, cfg.gen_batch_size, timer,
                   given=cfg.teacher_responses is not None)  # fmt: skip

    @property
    def seconds(self) -> float:
        return sum(self.charged.values())

    def __call__(self, epoch: int) -> list[list[int]]:
        """The token ids of the teacher's responses in ``epoch``."""
        return [r["ids"] for r in self.rows(epoch)]

    def rows(self, epoch: int) -> list[dict[str, Any]]:
        """``{ids, text, finish_reason}`` per prompt in ``epoch``. The generation time is charged
        (:attr:`charged`) whether they were generated now or read from disk (which stores the seconds they took),
        so every method and seed reports the teacher sampling it depends on, not only the run that made the file."""
        key = teacher_generation_key(self.teacher_cfg, self.tok, self.prompts, self.sp, epoch)
        path = self.root / f"{key}.jsonl"
        meta = path.with_suffix(".meta.json")
        if path.is_file():
            self.charged.setdefault(key, json.loads(meta.read_text())["seconds"] if meta.is_file() else 0.0)
            return [self._complete(json.loads(line)) for line in path.read_text().splitlines()]
        if epoch == 0 and self.given:
            print(f"warning: the teacher's epoch-0 responses are not in {self.root}: the responses stage encoded or "
                  "sampled the train prompts otherwise (another tokenizer or chat template?); sampling them again, "
                  "so this method does not train on the responses KD trains on", file=sys.stderr)  # fmt: skip
        t0 = time.perf_counter()
        gen = HFGenerator(self.teacher, self.tok, batch_size=self.batch_size, progress="teacher responses")
        sp = replace(self.sp, seed=teacher_epoch_seed(self.sp.seed, epoch))
        rows = [
            {"ids": c[0].token_ids, "text": c[0].text, "finish_reason": c[0].finish_reason}
            for c in gen.generate_ids(self.prompts, sp)
        ]
        seconds = time.perf_counter() - t0
        atomic_write_json(meta, {"seconds": seconds, "prompts": len(rows)})
        atomic_write_jsonl(path, rows)
        self.charged.setdefault(key, seconds)
        self.timer["teacher_generation_live"] = self.timer.get("teacher_generation_live", 0.0) + seconds
        return rows

    def _complete(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row from a file written before rows kept their text: decoded from its ids."""
        if "text" not in row:
            row["text"] = self.tok.decode(row["ids"], skip_special_tokens=True)
            row["finish_reason"] = "stop" if row["ids"] and row["ids"][-1] == self.tok.eos_token_id else "length"
        return row
