"""Distillation fidelity on held-out prompts: how close the student is to its teacher.

* ``fidelity/kl``: per-token ``KL(teacher || student)`` over the full vocabulary at the teacher-response positions
  of the held-out set (the headline metric; lower is better);
* ``fidelity/nll``: the student's per-token NLL of the teacher's responses (lower is better);
* ``fidelity/rouge_l``: ROUGE-L F1 (rouge-score, stemmer on) of the student's greedy response against the teacher's
  sampled response, averaged over prompts (higher is better).

The teacher's log-probabilities are computed once per process and reused for every model of a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from distill.data import Example, collate, encode_example, model_inputs, shift_targets
from distill.generation import HFGenerator, SamplingParams
from distill.losses import nll

METRIC_INFO = {
    "fidelity/kl": {"category": "fidelity", "higher_is_better": False, "label": "KL(T||S)", "pipeline_check": False},
    "fidelity/nll": {"category": "fidelity", "higher_is_better": False, "label": "NLL(y_T)", "pipeline_check": False},
    "fidelity/rouge_l": {
        "category": "fidelity",
        "higher_is_better": True,
        "label": "ROUGE-L vs T",
        "pipeline_check": False,
    },
}

_TEACHER_MEMO: dict[str, list[torch.Tensor]] = {}


def read_heldout(path: Path) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        Example(
            prompt=r["prompt"], response=r["response"], image=str(path.parent / r["image"]) if r.get("image") else None
        )
        for r in rows
    ]


def _logprobs(model, batch, vocab: int) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(**model_inputs(batch, device)).logits[:, :-1, :vocab]
    return torch.log_softmax(logits.float(), -1).cpu()


def teacher_logprobs(key: str, teacher, rows, pad_id: int, vocab: int, batch_size: int) -> list[torch.Tensor]:
    """Teacher log-probs at each held-out row's response positions (``[n_i, V]`` bf16), memoised by ``key``."""
    if key not in _TEACHER_MEMO:
        out = []
        for i in range(0, len(rows), batch_size):
            b = collate(rows[i : i + batch_size], pad_id)
            lp = _logprobs(teacher, b, vocab)
            _, mask = shift_targets(b["labels"])
            # bf16 keeps a SmolLM2-sized held-out set (~6k tokens x 49k vocab) at 0.6 GB; KL(fp32 || bf16) ~ 1e-3
            dtype = torch.bfloat16 if vocab > 8192 else torch.float32
            out.extend(lp[j][mask[j]].to(dtype) for j in range(len(lp)))
        _TEACHER_MEMO[key] = out
    return _TEACHER_MEMO[key]


def fidelity(
    model,
    tok,
    heldout: list[Example],
    teacher_lp: list[torch.Tensor],
    *,
    max_prompt_len: int,
    max_len: int,
    batch_size: int,
    max_new_tokens: int,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Fidelity metrics of ``model`` and one sample row per held-out prompt."""
    from rouge_score import rouge_scorer

    rows = [encode_example(tok, e, max_prompt_len, max_len) for e in heldout]
    vocab = teacher_lp[0].shape[-1]
    kl_sum = nll_sum = 0.0
    n_tok = 0
    for i in range(0, len(rows), batch_size):
        b = collate(rows[i : i + batch_size], tok.pad_token_id)
        lq = _logprobs(model, b, vocab)
        labels, mask = shift_targets(b["labels"])
        for j in range(len(lq)):
            q = lq[j][mask[j]]
            p = teacher_lp[i + j].float()
            kl_sum += float((p.exp() * (p - q)).sum(-1).clamp_min(0.0).sum())  # KL >= 0 per token
            nll_sum += float(nll(q[None], labels=labels[j][mask[j]][None]).sum())
            n_tok += int(mask[j].sum())
    gen = HFGenerator(model, tok, batch_size=max(batch_size, 16))
    prompts = [r.prompt_ids for r in rows]
    outs = gen.generate_ids(prompts, SamplingParams(max_new_tokens=max_new_tokens))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    samples, rouge = [], []
    for ex, out in zip(heldout, outs, strict=True):
        score = scorer.score(ex.response, out[0].text)["rougeL"].fmeasure
        rouge.append(score)
        prompt = ex.prompt if isinstance(ex.prompt, str) else ex.prompt[-1]["content"]
        samples.append({"prompt": prompt, "teacher": ex.response, "student": out[0].text, "rouge_l": score})
    metrics = {
        "fidelity/kl": kl_sum / max(1, n_tok),
        "fidelity/nll": nll_sum / max(1, n_tok),
        "fidelity/rouge_l": sum(rouge) / max(1, len(rouge)),
    }
    return metrics, samples
