"""Data policies: which rows each optimizer step trains on. The divergence is the loss's business, not ours.

Every sampler is driven by the global step and a seed, so all of its random decisions (data order, coin flips,
replay draws, generation seeds) are pure functions of ``(seed, step, micro-step)``. Its only mutable state is
what cannot be recomputed (the replay buffer, φ, the generated pairs of the current epoch); that goes into the
checkpoint, which makes resume exact.

* :class:`OfflineSampler`: fixed data, ground-truth or teacher responses (SFT, KD, SeqKD).
* :class:`OnPolicyMixSampler`: per micro-batch, with probability λ the student answers the batch's prompts
  itself (ImitKD λ = 1, GKD λ = 0.5). Fresh samples are trained on, not a random replay draw (methods.md §2.6.5).
* :class:`AdaptiveOffPolicySampler`: DistiLLM's adaptive off-policy scheme with a replay buffer (§2.3).
* :class:`BatchedOnPolicySampler`: DistiLLM-2's batched on-policy curation (§3.3): before every epoch, one teacher
  and one student response per prompt, paired by prompt.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from distill.data import Row
from distill.generation import SamplingParams
from distill.seeds import derive_seed

if TYPE_CHECKING:
    from distill.train_config import TrainConfig

# (prompt ids, seed) -> one response (token ids) per prompt
GenerateFn = Callable[[list[list[int]], int], list[list[int]]]


@dataclass
class Plan:
    """Shape of training: examples per micro-batch, micro-batches per step, steps per epoch, epochs."""

    micro_batch: int
    grad_accum: int
    n_examples: int
    epochs: int
    max_steps: int | None = None
    world_size: int = 1
    rank: int = 0

    @property
    def per_step(self) -> int:
        """Examples per optimizer step over all ranks."""
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.n_examples // self.per_step

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return min(total, self.max_steps) if self.max_steps else total

    def validate(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{self.n_examples} training examples are fewer than one optimizer step "
                f"({self.micro_batch} x {self.grad_accum} x {self.world_size} ranks); lower batch_size or grad_accum"
            )


class Sampler:
    """Base: epoch order and the micro-batch split of one optimizer step."""

    name = "base"

    def __init__(self, plan: Plan, seed: int):
        plan.validate()
        self.plan, self.seed = plan, seed
        #: sequence lengths for length-grouped batches (see :meth:`epoch_order`); None: plain shuffling
        self.lengths: list[int] | None = None
        self._order: tuple[int, list[int]] | None = None
        self.stats: dict[str, float] = {}
        #: fraction of training done, set by the trainer before each step (token budgets); None: step / total
        self.progress: float | None = None

    def epoch_of(self, step: int) -> int:
        return step // self.plan.steps_per_epoch

    def step_indices(self, step: int) -> list[list[int]]:
        """Example indices of each micro-batch of optimizer step ``step`` (0-based)."""
        epoch, j = divmod(step, self.plan.steps_per_epoch)
        perm = self.epoch_order(epoch)
        chunk = perm[j * self.plan.per_step : (j + 1) * self.plan.per_step]
        # global micro-batch m is examples [m*mb*W, (m+1)*mb*W); rank r takes its r-th slice of each, so W ranks
        # with micro-batch mb see exactly what one process with micro-batch mb*W sees
        mb, world, rank = self.plan.micro_batch, self.plan.world_size, self.plan.rank
        glob = mb * world
        return [chunk[i + rank * mb : i + (rank + 1) * mb] for i in range(0, len(chunk), glob)]

    def epoch_order(self, epoch: int) -> list[int]:
        """The example order of ``epoch``: a seeded shuffle. With :attr:`lengths`, each run of 64 consecutive
        steps' examples is then sorted by length (HF's ``group_by_length`` megabatches), so a batch holds sequences
        of similar length and pads little; the steps keep their shuffled order, and the examples of an epoch are
        the same."""
        if self._order is not None and self._order[0] == epoch:
            return self._order[1]
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        perm = torch.randperm(self.plan.n_examples, generator=g).tolist()  # host: an order, as a list
        if self.lengths is not None:
            mega = 64 * self.plan.per_step
            groups = [sorted(perm[i : i + mega], key=lambda k: -self.lengths[k]) for i in range(0, len(perm), mega)]
            size = self.plan.per_step
            steps = [grp[i : i + size] for grp in groups for i in range(0, len(grp), size)]
            full, rest = [st for st in steps if len(st) == size], [k for st in steps if len(st) < size for k in st]
            order = torch.randperm(len(full), generator=g).tolist()  # host: an order, as a list
            perm = [k for i in order for k in full[i]] + rest  # the epoch's steps take full groups only
        self._order = (epoch, perm)
        return perm

    def rng(self, step: int, micro: int, what: str) -> random.Random:
        return random.Random(derive_seed(self.seed, what, step, micro))

    def batches(self, step: int) -> list[list[Row]]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def on_validation(self, loss: float) -> None:
        """Called with the validation loss at each validation point."""
        del loss


class OfflineSampler(Sampler):
    """Fixed rows (ground-truth or teacher responses)."""

    name = "offline"

    def __init__(self, plan: Plan, seed: int, rows: list[Row], group_by_length: bool = False):
        super().__init__(plan, seed)
        self.rows = rows
        if group_by_length:
            self.lengths = [len(r.prompt_ids) + len(r.response_ids) for r in rows]

    def batches(self, step: int) -> list[list[Row]]:
        self.stats = {"on_policy_fraction": 0.0}
        return [[self.rows[i] for i in idx] for idx in self.step_indices(step)]


class OnPolicyMixSampler(Sampler):
    """A fraction ``lam`` of the micro-batches trains on fresh student responses to the batch's prompts (GKD, and
    ImitKD at ``lam = 1``).

    GKD's Algorithm 1 (and TRL's ``GKDTrainer``) flips a coin per batch: on-policy with probability λ. Here the
    micro-batches are stratified instead: global micro-batch ``g`` is on-policy iff ``⌊(g+1)λ + u⌋ > ⌊gλ + u⌋``,
    with one phase ``u ~ U[0, 1)`` per seed. Each micro-batch is still on-policy with probability exactly λ (over
    ``u``), as in GKD, but any ``k`` consecutive ones hold ``⌊kλ⌋`` or ``⌈kλ⌉`` on-policy batches instead of a
    Binomial(k, λ) count: a short run's fraction is λ from its first steps (a coin left an 8-step λ = 0.5 run with
    none at all). All ranks agree on every decision, as one process with the whole batch would.
    """

    name = "on_policy"

    def __init__(self, plan: Plan, seed: int, rows: list[Row], generate_student: GenerateFn, lam: float):
        super().__init__(plan, seed)
        self.rows, self.generate_student, self.lam = rows, generate_student, lam
        self.phase = random.Random(derive_seed(seed, "on-policy phase")).random()

    def on_policy(self, g: int) -> bool:
        """Whether global micro-batch ``g`` (``step * grad_accum + m``) trains on student responses."""
        return math.floor((g + 1) * self.lam + self.phase) > math.floor(g * self.lam + self.phase)

    def batches(self, step: int) -> list[list[Row]]:
        out, on = [], 0
        for m, idx in enumerate(self.step_indices(step)):
            fixed = [self.rows[i] for i in idx]
            if self.on_policy(step * self.plan.grad_accum + m):
                responses = self.generate_student(
                    [r.prompt_ids for r in fixed], derive_seed(self.seed, "gen", step, m)
                )
                out.append([Row(r.prompt_ids, resp, "student") for r, resp in zip(fixed, responses, strict=True)])
                on += 1
            else:
                out.append(fixed)
        self.stats = {"on_policy_fraction": on / len(out)}
        return out


ReplaySchedule = Literal["decreasing", "constant", "increasing"]


def replay_threshold(schedule: ReplaySchedule, phi: float, progress: float) -> float:
    """DistiLLM's λ_R: the probability of generating fresh student outputs (``finetune.py``, exact)."""
    if schedule == "decreasing":
        return phi * (1.0 - progress)
    if schedule == "constant":
        return 0.5 * phi
    if schedule == "increasing":
        return phi * progress
    raise ValueError(f"unknown replay schedule {schedule!r}; allowed: decreasing, constant, increasing")


class AdaptiveOffPolicySampler(Sampler):
    """DistiLLM (Ko et al. 2024) adaptive off-policy sampling with a replay buffer (methods.md §2.3).

    Per micro-batch, with u ~ U(0, 1):
    1. ``u < λ_R`` (or ``u < φ`` while the buffer is not full): the student answers the current batch's prompts;
       the outputs are pushed into the FIFO buffer and trained on.
    2. else ``u < φ``: train on a uniform draw (without replacement) from the buffer.
    3. else: train on the fixed data.
    φ starts at ``phi_init`` and rises by ``phi_step`` (capped at 1) whenever the validation loss rises by at least
    ``loss_eps`` over the last value that triggered (or the first). Fixes over the reference code: the
    non-adaptive replay schedules run (its ``None * float`` crash), SGO labels are shifted correctly (see
    ``distill.data``), and CE is never applied to student outputs (the trainer's loss is the divergence only).
    Each data-parallel rank keeps its own buffer, as the reference does.
    """

    name = "adaptive"

    def __init__(
        self,
        plan: Plan,
        seed: int,
        rows: list[Row],
        generate_student: GenerateFn,
        *,
        phi_init: float = 0.0,
        phi_step: float = 0.1,
        loss_eps: float = 0.1,
        capacity: int = 1000,
        schedule: ReplaySchedule = "decreasing",
    ):
        super().__init__(plan, seed)
        self.rows, self.generate_student = rows, generate_student
        self.phi, self.phi_step, self.loss_eps, self.schedule = phi_init, phi_step, loss_eps, schedule
        self.buffer: deque[Row] = deque(maxlen=capacity)
        self.prev_val: float | None = None
        replay_threshold(schedule, 0.0, 0.0)  # validate the name early

    def batches(self, step: int) -> list[list[Row]]:
        progress = self.progress if self.progress is not None else step / max(1, self.plan.total_steps)
        lam_r = replay_threshold(self.schedule, self.phi, progress)
        out, fresh, replayed = [], 0, 0
        for m, idx in enumerate(self.step_indices(step)):
            fixed = [self.rows[i] for i in idx]
            u = self.rng(step, m, "coin").random()
            full = len(self.buffer) >= (self.buffer.maxlen or 0)
            if u < lam_r or (u < self.phi and not full):
                responses = self.generate_student(
                    [r.prompt_ids for r in fixed], derive_seed(self.seed, "gen", step, m)
                )
                batch = [Row(r.prompt_ids, resp, "student") for r, resp in zip(fixed, responses, strict=True)]
                self.buffer.extend(batch)
                out.append(batch)
                fresh += 1
            elif u < self.phi and len(self.buffer) >= len(fixed):
                pick = self.rng(step, m, "replay").sample(range(len(self.buffer)), len(fixed))
                out.append([self.buffer[i] for i in pick])
                replayed += 1
            else:
                out.append(fixed)
        n = len(out)
        self.stats = {
            "phi": self.phi,
            "replay_threshold": lam_r,
            "on_policy_fraction": (fresh + replayed) / n,
            "fresh_fraction": fresh / n,
            "buffer_size": float(len(self.buffer)),
        }
        return out

    def on_validation(self, loss: float) -> None:
        if self.prev_val is None:
            self.prev_val = loss
        elif loss >= self.prev_val + self.loss_eps:
            self.phi = min(1.0, self.phi + self.phi_step)
            self.prev_val = loss

    def state_dict(self) -> dict[str, Any]:
        return {
            "phi": self.phi,
            "prev_val": self.prev_val,
            "buffer": [(r.prompt_ids, r.response_ids, r.source, r.image) for r in self.buffer],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phi, self.prev_val = state["phi"], state["prev_val"]
        self.buffer.clear()
        self.buffer.extend(Row(list(p), list(r), s, *image) for p, r, s, *image in state["buffer"])


class BatchedOnPolicySampler(Sampler):
    """DistiLLM-2 batched on-policy data (methods.md §3.3).

    Before each epoch: one teacher response (from ``teacher_responses(epoch)``, cached on disk by the trainer and
    shared across methods) and one response of the current student per prompt, paired by prompt. A micro-batch of
    B prompts has 2B rows: the B teacher-response rows, then the B student-response rows of the same prompts.
    """

    name = "batched"

    def __init__(
        self,
        plan: Plan,
        seed: int,
        prompts: list[list[int]],
        teacher_responses: Callable[[int], list[list[int]]],
        generate_student: GenerateFn,
    ):
        super().__init__(plan, seed)
        self.prompts, self.teacher_responses, self.generate_student = prompts, teacher_responses, generate_student
        self.epoch: int | None = None
        self.pairs: list[tuple[list[int], list[int]]] = []

    def _prepare(self, epoch: int) -> None:
        teacher = self.teacher_responses(epoch)
        student = self.generate_student(self.prompts, derive_seed(self.seed, "epoch-gen", epoch))
        self.pairs = list(zip(teacher, student, strict=True))
        self.epoch = epoch

    def batches(self, step: int) -> list[list[Row]]:
        epoch = self.epoch_of(step)
        fresh = self.epoch != epoch
        if fresh:
            self._prepare(epoch)
        out = []
        for idx in self.step_indices(step):
            t_rows = [Row(self.prompts[i], self.pairs[i][0], "teacher") for i in idx]
            s_rows = [Row(self.prompts[i], self.pairs[i][1], "student") for i in idx]
            out.append(t_rows + s_rows)
        self.stats = {"on_policy_fraction": 0.5, "regenerated": float(fresh)}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pairs": self.pairs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.pairs = [(list(t), list(s)) for t, s in state["pairs"]]


#: a data policy: name -> builder ``(cfg, plan, data_rows, prompts, teacher_responses, generate_student) ->
#: Sampler``. A method (``distill/methods.py``) names one; ``TrainConfig`` refuses a name that is not here.
SAMPLERS: dict[str, Callable[..., Sampler]] = {}


def register_sampler(name: str) -> Callable[[Callable[..., Sampler]], Callable[..., Sampler]]:
    def deco(builder: Callable[..., Sampler]) -> Callable[..., Sampler]:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} is registered twice")
        SAMPLERS[name] = builder
        return builder

    return deco


@register_sampler("offline")
def _offline(cfg: TrainConfig, plan: Plan, data_rows, prompts, teacher_resp, generate_student) -> Sampler:
    return OfflineSampler(plan, cfg.seed, data_rows(), cfg.data.group_by_length)


@register_sampler("on_policy")
def _on_policy(cfg: TrainConfig, plan: Plan, data_rows, prompts, teacher_resp, generate_student) -> Sampler:
    from distill.methods import METHODS

    lam = METHODS[cfg.method].lam
    return OnPolicyMixSampler(plan, cfg.seed, data_rows(), generate_student, cfg.gkd_lambda if lam is None else lam)


@register_sampler("adaptive")
def _adaptive(cfg: TrainConfig, plan: Plan, data_rows, prompts, teacher_resp, generate_student) -> Sampler:
    d = cfg.distillm
    return AdaptiveOffPolicySampler(
        plan,
        cfg.seed,
        data_rows(),
        generate_student,
        phi_init=d.phi_init,
        phi_step=d.phi_step,
        loss_eps=d.loss_eps,
        capacity=d.buffer_capacity,
        schedule=d.replay_ratio,
    )


@register_sampler("batched")
def _batched(cfg: TrainConfig, plan: Plan, data_rows, prompts, teacher_resp, generate_student) -> Sampler:
    return BatchedOnPolicySampler(plan, cfg.seed, prompts, teacher_resp, generate_student)


def make_sampler(cfg: TrainConfig, plan: Plan, data_rows, prompts, teacher_resp, generate_student) -> Sampler:
    """The data policy of ``cfg.method`` (its ``Method.sampler``, from :data:`SAMPLERS`). ``data_rows()`` gives the
    offline rows (read only by the policies that use them)."""
    from distill.methods import METHODS

    return SAMPLERS[METHODS[cfg.method].sampler](cfg, plan, data_rows, prompts, teacher_resp, generate_student)


def student_sampling(cfg: TrainConfig, max_new: int) -> SamplingParams:
    """How the student samples its own responses: ``student_sampling`` if set, else the method's defaults, capped at
    ``max_new`` (the room the longest prompt leaves) and ``student_max_new_tokens``."""
    from distill.methods import METHODS

    if cfg.student_sampling is not None:
        sp = cfg.student_sampling
    else:  # the method's own (distill/methods.py)
        m = METHODS[cfg.method]
        sp = SamplingParams(temperature=m.student_temperature, top_p=m.student_top_p, max_new_tokens=256)
    cap = min(sp.max_new_tokens, max_new, cfg.student_max_new_tokens or max_new)
    return SamplingParams(**{**vars(sp), "max_new_tokens": cap, "n": 1})
