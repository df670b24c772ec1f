"""The ``TrainConfig`` of each training stage of a suite (teacher, init, every method and seed), built typed.

A suite never talks to the trainer in strings: each stage's config is a real :class:`TrainConfig`, built from the
typed values of the suite's sections (the teacher's and student's :class:`ModelConfig` passed whole) with the
suite's ``key=value`` overrides applied on top, and validated once, at the end, exactly as on the command line
(:func:`build`; validating each intermediate config would refuse a suite whose overrides fix a value that the
typed sections alone leave invalid). The stage's key is the hash of that config (:func:`config_key`), so two stages that would train the same way
share their key, and any change to what trains changes it.

The paths a stage reads from the stages before it (the trained teacher, the init, the response files) are only known
once those have run. :data:`PLANNED` holds placeholders for them: the key is computed from the config with the
placeholders, and the stage runs the config with the real paths (:func:`method_config` etc. with
:class:`Inputs` from the finished stages). Fields that say where and how a run is kept, not what it computes
(``output_dir``, ``resume``, checkpoint cadence ...), are left out of the key (:data:`OPERATIONAL`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from distill.config import ConfigError, config_to_dict, load_config
from distill.models import ModelConfig
from distill.train_config import TrainConfig

if TYPE_CHECKING:
    from bench.suite import SuiteConfig

#: the keys the teacher stage sets before ``teacher_train.overrides`` (which may change them)
TEACHER_TRAIN_BASE = ("data.max_len=256", "data.max_prompt_len=192")
#: TrainConfig fields that do not change what a run computes: left out of the stage key
OPERATIONAL = (
    "output_dir",
    "resume",
    "save_every",
    "save_every_min",
    "keep_checkpoints",
    "checkpoint_at_end",
    "tensorboard",
    "cache_dir",
    "teacher_responses",
)


@dataclass(frozen=True)
class Inputs:
    """What a training stage reads from the stages before it."""

    teacher: ModelConfig  # the suite's teacher, or the one the teacher stage trained
    init: str  # the init stage's model
    train_file: str  # the teacher's responses to the train prompts
    val_file: str  # validation prompts with their responses (never the held-out ones)
    labelled_file: str | None  # the ground truth of the labelled subset (None: the suite has none)
    teacher_responses: str  # the responses stage's generations/: the teacher's samples, a file per epoch
    output_dir: str


#: placeholders for the inputs, for stage keys before anything ran (a real path never starts with '@')
PLANNED = Inputs(ModelConfig(name="@stage:teacher"), "@stage:init", "@responses:train", "@responses:val",
                 "@responses:labelled", "@responses:generations", "@stage")  # fmt: skip


def planned(suite: SuiteConfig) -> Inputs:
    """The placeholders of :data:`PLANNED`, with the suite's own teacher where it trains none and no labelled file
    where it has no labelled subset: what a stage key depends on."""
    teacher = replace(PLANNED.teacher, dtype=suite.teacher.dtype) if suite.teacher_train.enabled else suite.teacher
    return replace(PLANNED, teacher=teacher, labelled_file=PLANNED.labelled_file if suite.prompts.n_labelled else None)


def build(fields: dict[str, Any], overrides: list[str] | tuple[str, ...], where: str) -> TrainConfig:
    """A ``TrainConfig`` from the typed values the suite sets (a nested mapping: a section given in part takes its
    class defaults for the rest), then ``key=value`` overrides in order, validated once, at the end, exactly as the
    trainer's own CLI loads a config (every range checked; an unknown key is an error naming ``where`` and the key).
    """
    try:
        return load_config(TrainConfig, data=fields, overrides=list(overrides))
    except ConfigError as err:
        raise ConfigError(f"{where}: {str(err).replace('command line override ', 'override ')}") from None


def _common(suite: SuiteConfig, inputs: Inputs, ground_truth: bool) -> dict[str, Any]:
    """What every training stage of the suite shares (the init and the methods)."""
    t = suite.train
    train_file = inputs.labelled_file if ground_truth and inputs.labelled_file else inputs.train_file
    return {
        "method": "sft",
        "teacher": asdict(inputs.teacher),  # whole: pruned, quantised, its cache
        "data": {
            "train_file": train_file,
            "val_file": inputs.val_file,  # validation prompts only: DistiLLM's schedule never reads held-out ones
            "val_fraction": 0.0,
            "max_prompt_len": t.max_prompt_len,
            "max_len": t.max_len,
        },
        "output_dir": inputs.output_dir,
        "mixed_precision": t.mixed_precision,
        "gen_batch_size": t.gen_batch_size,
        "chunked_loss": t.chunked_loss,
        "validation": t.validation,
        "resume": "auto",
        "checkpoint_at_end": False,  # a finished stage is recorded by done.json; its optimizer state would be unused
        "student_max_new_tokens": t.student_max_new_tokens,  # keeps each method's own sampling
        "teacher_sampling": asdict(suite.teacher_sampling),  # whole: the responses stage samples with the same
        "cache_dir": suite.cache_dir,
        "teacher_responses": inputs.teacher_responses,  # its epoch 0 is the train responses; later epochs join it
    }


def teacher_config(suite: SuiteConfig, gold_file: str, output_dir: str) -> TrainConfig:
    """The teacher stage: SFT of the suite's (random) teacher on its tasks' gold answers."""
    tt, name = suite.teacher_train, suite.teacher.name
    fields = {
        "method": "sft",
        "teacher": {"name": name},
        "student": {"name": name},
        "data": {"train_file": gold_file, "val_fraction": 0.0},
        "optim": {"epochs": tt.epochs, "lr": tt.lr, "batch_size": tt.batch_size},
        "output_dir": output_dir,
        "resume": "auto",
        "checkpoint_at_end": False,
    }
    return build(fields, [*TEACHER_TRAIN_BASE, *tt.overrides], "teacher_train.overrides")


def init_config(suite: SuiteConfig, inputs: Inputs) -> TrainConfig:
    """The init stage: SFT of the student on the labelled ground truth (or the teacher's responses)."""
    c = suite
    student = c.student
    if student.name == "@teacher":  # derived from the (possibly freshly trained) teacher
        student = replace(student, name=inputs.teacher.name)
    optim: dict[str, Any] = {"epochs": c.init.epochs, "lr": c.init.lr, "batch_size": c.init.batch_size}
    if not c.init.enabled:  # no SFT: the "init" is the raw (derived) student, saved as is
        optim.update(max_steps=1, lr=1e-12)
    fields = _common(c, inputs, ground_truth=True) | {
        "student": asdict(student),
        "optim": optim,
        "seed": c.prompts.seed,
    }
    return build(fields, [], "init")


def method_config(suite: SuiteConfig, method: str, seed: int, inputs: Inputs) -> TrainConfig:
    """A method's training stage: from the init, for the suite's token budget (or epochs), with snapshots along
    the budget for the learning curves; then ``train.overrides`` and ``train.method_overrides[method]``."""
    from distill.methods import METHODS

    t = suite.train
    budget = t.token_budget
    points = (
        [round(budget * i / t.curve_points) for i in range(1, t.curve_points)] if t.curve_points and budget else []
    )
    optim: dict[str, Any] = {"lr": t.lr, "batch_size": t.batch_size, "warmup_steps": t.warmup_steps,
                             "grad_accum": t.grad_accum}  # fmt: skip
    # under a budget the epochs only bound it (the LR schedule decays over the budget)
    optim.update({"max_tokens": budget, "epochs": 100} if budget else {"epochs": t.epochs})
    fields = _common(suite, inputs, ground_truth=METHODS[method].source == "data") | {  # SFT: the labelled set
        "method": method,
        "student": {"name": inputs.init},
        "seed": seed,
        "optim": optim,
        "snapshot_tokens": points,
    }
    return build(
        fields,
        [*t.overrides, *t.method_overrides.get(method, [])],
        f"train.overrides / train.method_overrides.{method}",
    )


def reads_teacher_responses(method: str) -> bool:
    """Whether a method trains on the teacher's samples through ``TeacherResponses`` (SeqKD, the batched
    on-policy methods), rather than on the response files (KD) or the student's own samples."""
    from distill.methods import METHODS

    m = METHODS[method]
    return m.source == "teacher" or m.sampler == "batched"


def teacher_encoding(suite: SuiteConfig) -> tuple[Any, Any]:
    """``(DataConfig, teacher SamplingParams)`` with which the training stages encode the train prompts and sample
    the teacher: the first method's that reads the teacher's samples (with its overrides), else the init's. The
    responses stage writes epoch 0 exactly so, and its key hashes them."""
    inputs = planned(suite)
    users = [m for m in suite.methods if reads_teacher_responses(m)]
    cfg = method_config(suite, users[0], suite.seeds[0], inputs) if users else init_config(suite, inputs)
    return cfg.data, cfg.teacher_sampling


def config_key(cfg: TrainConfig) -> dict[str, Any]:
    """The part of a stage's config that its key hashes: everything that changes what the run computes."""
    d = config_to_dict(cfg)
    for name in OPERATIONAL:
        d.pop(name)
    for model in ("teacher", "student"):  # where a model is cached does not change it
        d[model].pop("cache_dir")
    return d
