"""Inference engines for student generation during training: built once per run on a snapshot of the student,
their weights synced before each round (``gen_backend``).

* :class:`VLLMGenerator` (GPU, the ``vllm`` extra): imported lazily. Its request building is a pure function,
  :func:`build_vllm_requests`, unit-tested on CPU.
* :class:`HFEngine`: the same interface with HF generation behind it, so the engine code path (the merged
  snapshot, the weight sync, generation from ids) runs on a CPU (``gen_backend=hf-engine``; ``run --stand-in``).

A LoRA student is merged into a copy of its weights (:func:`merged_state_dict`), never in place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from distill.atomic import atomic_dir
from distill.generation import Completion, Generator, HFGenerator, Prompt, SamplingParams, render_prompt, stream_seed
from distill.vision import save_tokenizer


def build_vllm_requests(rendered_prompts: Sequence[str], sampling: SamplingParams) -> list[tuple[str, dict[str, Any]]]:
    """Pure request building for vLLM: one ``(prompt, SamplingParams kwargs)`` per prompt.

    Each request gets its own seed (from :func:`stream_seed`), so results do not depend on batching.
    ``no_repeat_ngram_size`` has no vLLM equivalent and is refused rather than silently dropped.
    """
    if sampling.no_repeat_ngram_size:
        raise ValueError("no_repeat_ngram_size is not supported by the vllm backend; use backend=hf")
    requests = []
    for text in rendered_prompts:
        kwargs: dict[str, Any] = {
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "max_tokens": sampling.max_new_tokens,
            "stop": list(sampling.stop) or None,
            "seed": stream_seed(sampling.seed, text, 0),
            "skip_special_tokens": True,
        }
        requests.append((text, kwargs))
    return requests


class VLLMGenerator:
    """vLLM engine over a model directory (GPU). ``vllm`` is imported only when this class is built."""

    def __init__(self, model_dir: str, tokenizer, chat: bool = True, **engine_kwargs: Any):
        try:
            import vllm
        except ImportError:
            raise ImportError("backend=vllm needs the vllm extra: pip install 'distillm-bench[vllm]'") from None
        self._vllm = vllm
        self.tokenizer, self.chat = tokenizer, chat
        engine_kwargs.setdefault("dtype", "bfloat16")
        # the V1 engine runs its workers in other processes: load_weights sends them a callable (collective_rpc),
        # which vLLM pickles only with this set (not verified on a GPU here; scripts/gpu-check.sh's vllm-sync row)
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        self.llm = vllm.LLM(model=model_dir, **engine_kwargs)

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[Completion]]:
        texts = [render_prompt(self.tokenizer, p, self.chat)[0] for p in prompts]
        requests = build_vllm_requests(texts, sampling)
        return self._run([t for t, _ in requests], [kw for _, kw in requests])

    def generate_ids(self, prompt_ids: Sequence[list[int]], sampling: SamplingParams) -> list[list[Completion]]:
        """Generate from token ids (the trainer's path); seeds per prompt as in :func:`build_vllm_requests`."""
        keys = [",".join(map(str, p)) for p in prompt_ids]
        kwargs = [kw for _, kw in build_vllm_requests(keys, sampling)]
        return self._run([{"prompt_token_ids": list(p)} for p in prompt_ids], kwargs)

    def _run(self, prompts: list, kwargs: list[dict[str, Any]]) -> list[list[Completion]]:
        params = [self._vllm.SamplingParams(**kw) for kw in kwargs]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [
                Completion(
                    text=o.text,
                    token_ids=list(o.token_ids),
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                )
                for o in req.outputs
            ]
            for req in outputs
        ]

    def load_weights(self, model: torch.nn.Module) -> None:
        """Sync trained (student) weights into the engine before a generation round; LoRA adapters are merged into
        a copy of the weights (:func:`merged_state_dict`), never into the training model."""
        state = list(merged_state_dict(model).items())
        engine = self.llm.llm_engine
        if hasattr(self.llm, "collective_rpc"):  # vLLM >= 0.8 (V1 engine)
            self.llm.collective_rpc(lambda worker: worker.model_runner.model.load_weights(state))
        else:  # V0 engine
            engine.model_executor.driver_worker.model_runner.model.load_weights(state)


class HFEngine:
    """vLLM's interface (built on a model directory, its weights synced before each round) with HF generation
    behind it: the trainer's engine code path (the merged snapshot, the weight sync, generation from ids) on a CPU.
    ``gen_backend=hf-engine`` selects it; ``run --stand-in`` uses it in place of ``vllm``."""

    def __init__(self, model_dir: str, tokenizer, chat: bool = True, batch_size: int = 64, **engine_kwargs: Any):
        from distill.models import inference_device, load_model

        if not (Path(model_dir) / "config.json").is_file():
            raise FileNotFoundError(f"engine model directory {model_dir} has no config.json")
        self.model = load_model(model_dir)[0].to(inference_device()).eval()
        self.tokenizer, self.chat, self.batch_size, self.syncs = tokenizer, chat, batch_size, 0

    def load_weights(self, model: torch.nn.Module) -> None:
        """Sync trained weights in, as :meth:`VLLMGenerator.load_weights` does (every key must match)."""
        self.model.load_state_dict(merged_state_dict(model), strict=True)
        self.syncs += 1

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> list[list[Completion]]:
        return HFGenerator(self.model, self.tokenizer, self.batch_size, self.chat).generate(prompts, sampling)

    def generate_ids(self, prompt_ids: Sequence[list[int]], sampling: SamplingParams) -> list[list[Completion]]:
        return HFGenerator(self.model, self.tokenizer, self.batch_size, self.chat).generate_ids(prompt_ids, sampling)


#: the trainer's engine backends for student generation (``gen_backend``): an engine is built once per run on a
#: snapshot of the student and synced before each round
ENGINES: dict[str, type] = {"vllm": VLLMGenerator, "hf-engine": HFEngine}


def make_generator(backend: str, model, tokenizer, *, model_dir: str | None = None, **kwargs: Any) -> Generator:
    """Build the backend named in config: ``hf`` (needs ``model``) or ``vllm`` (needs ``model_dir``)."""
    if backend == "hf":
        return HFGenerator(model, tokenizer, **kwargs)
    if backend == "vllm":
        if model_dir is None:
            raise ValueError("backend=vllm needs a model directory")
        return VLLMGenerator(model_dir, tokenizer, **kwargs)
    raise ValueError(f"unknown generation backend {backend!r}; allowed: hf, vllm")


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``model`` under the plain model's names, with LoRA adapters merged, leaving ``model`` as it
    is: what an inference engine loads.

    PEFT's ``merge_and_unload()`` works in place: on the live training model it folded the adapters into the base
    weights and removed them (trainable parameters 71,680 -> 0 in a repro; the loss no longer required grad). Here
    each adapted weight is ``W + get_delta_weight()`` in a new tensor; the model is not touched."""
    if not hasattr(model, "get_base_model"):  # no adapters
        return {k: v.detach() for k, v in model.state_dict().items()}
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and not module.merged:
                w = module.get_base_layer().weight
                own = {**module.lora_A, **getattr(module, "lora_embedding_A", {})}  # linear and embedding adapters
                deltas = [module.get_delta_weight(a) for a in module.active_adapters if a in own]
                # in the base weight's dtype, as PEFT's own merge (adapters may be kept in fp32 over a bf16 base)
                merged[f"{name}.weight"] = sum(deltas, start=w.detach().float()).to(w.dtype) if deltas else w.detach()
    out = {}
    for key, value in base.state_dict().items():
        if "lora_" in key or ".original_module." in key:
            continue
        plain = re.sub(r"\.modules_to_save\.[^.]+\.", ".", key.replace(".base_layer.", "."))  # the trained copy
        out[plain] = merged.get(plain, value.detach())
    return out


def save_merged(model: torch.nn.Module, tok, path: str | Path) -> None:
    """Save ``model`` as a plain model directory (``config.json`` and merged weights) that an engine can load: a
    ``PeftModel``'s own ``save_pretrained`` writes its adapters only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.save_pretrained(path, state_dict=merged_state_dict(model))
    save_tokenizer(tok, path)


def engine_student(holder: list, model, tok, out_dir: Path, backend: str = "vllm", batch_size: int = 64,
                   **engine_kwargs: Any):  # fmt: skip
    """One engine per run (``ENGINES[backend]``) over a snapshot of the initial student (adapters merged); weights
    are synced before each round. ``engine_kwargs`` go to the engine (vLLM: ``dtype``, ...)."""
    if not holder:
        snap = out_dir / "engine-student-init"
        if not (snap / "config.json").is_file():
            with atomic_dir(snap) as tmp:
                save_merged(model, tok, tmp)
        if backend == "vllm":
            kw = {"gpu_memory_utilization": 0.3, "enforce_eager": True, **engine_kwargs}
            holder.append(VLLMGenerator(str(snap), tok, **kw))
        else:
            holder.append(ENGINES[backend](str(snap), tok, batch_size=batch_size, **engine_kwargs))
    return holder[0]
