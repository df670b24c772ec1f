"""The method registry: a method is a data policy (a sampler, :mod:`distill.sampling`) plus a loss from
:data:`distill.losses.LOSSES`. Every list of methods in the project reads :data:`METHODS` (pure data: importing it
loads no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Method:
    sampler: str  # a data policy of distill.sampling.SAMPLERS: offline, on_policy, adaptive, batched
    loss: str
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    reduction: Literal["token", "sequence"] = "token"
    source: Literal["data", "teacher", "auto"] = "auto"  # offline responses
    lam: float | None = None  # on-policy fraction (None: from the config's gkd_lambda)
    label: str = ""  # the name in tables (default: the registry key)
    # the student's sampling where the method generates (``student_sampling`` in the config overrides it):
    # T = 1 as DistiLLM's sampler.py; the batched methods T = 0.8, top-p 0.95 as DistiLLM-2's generate_vllm.py
    student_temperature: float = 1.0
    student_top_p: float = 1.0
    compared: bool = True  # one of the seven methods a suite compares by default (DistiLLM-2's Table 2 rows)

    @property
    def reads_validation(self) -> bool:
        """DistiLLM's adaptive off-policy schedule raises φ when the validation loss rises."""
        return self.sampler == "adaptive"


#: methods.md §4 baselines and the two papers' methods, as (data policy, loss).
METHODS: dict[str, Method] = {
    "sft": Method("offline", "nll", source="data", label="SFT"),
    "kd": Method("offline", "forward_kl", label="KD"),
    "seqkd": Method("offline", "nll", source="teacher", label="SeqKD"),
    "imitkd": Method("on_policy", "forward_kl", lam=1.0, label="ImitKD"),
    "gkd": Method("on_policy", "generalized_jsd", {"beta": 0.5}, label="GKD"),
    "distillm": Method("adaptive", "skew_reverse_kl", {"alpha": 0.1}, label="DistiLLM"),
    "distillm2": Method(
        "batched",
        "distillm2_contrastive",
        reduction="sequence",
        label="DistiLLM-2",
        student_temperature=0.8,
        student_top_p=0.95,
    ),
    "distillm_v1_batched": Method(
        "batched",
        "skew_reverse_kl",
        {"alpha": 0.1},
        reduction="sequence",
        label="DistiLLM (batched)",
        compared=False,
        student_temperature=0.8,
        student_top_p=0.95,
    ),
    "dpkd": Method(
        "batched", "dpkd", {"beta": 0.1}, label="DPKD", compared=False, student_temperature=0.8, student_top_p=0.95
    ),
}


def method_label(name: str) -> str:
    """The name of method ``name`` in tables (the key itself for an unknown one)."""
    m = METHODS.get(name)
    return (m.label or name) if m is not None else name


#: the methods a suite compares by default, in the leaderboard's row order
COMPARED = [name for name, m in METHODS.items() if m.compared]
