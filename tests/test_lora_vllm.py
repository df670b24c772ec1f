"""LoRA students and an inference engine (vLLM): syncing or snapshotting the student never touches its adapters.

All three ``paper-distillm2-*`` suites train LoRA students with ``gen_backend=vllm``. The sync once called PEFT's
``merge_and_unload()`` on the live training model (in place: the adapters were folded in and removed, so training
went on with no trainable parameters), and the engine's snapshot was the ``PeftModel``'s ``save_pretrained``
(adapter files, no ``config.json``: nothing for vLLM to load). vLLM needs a GPU, so a stand-in engine built on HF
generation takes its place here; the trainer's code path up to the engine is the real one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import distill.engines
from distill.config import load_config
from distill.engines import merged_state_dict, save_merged
from distill.generation import HFGenerator
from distill.models import apply_lora, load_from_config, load_model
from distill.train import TrainConfig, train
from distill.train_config import LoraConfig
from tests.train_helpers import base_overrides, write_train_data


def _lora_student(seed: int = 0):
    model, tok = load_model("tiny-llama")
    student = apply_lora(LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0), model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B starts at zero; a trained adapter is not
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return student, tok


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_merged_weights_leave_the_training_model_untouched_and_equal_peft_merge():
    student, _ = _lora_student()
    n, before = _trainable(student), {k: v.clone() for k, v in student.state_dict().items()}
    merged = merged_state_dict(student)
    assert _trainable(student) == n > 0  # the adapters are still there and still train
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())
    reference = copy.deepcopy(student).merge_and_unload().state_dict()  # PEFT's merge, on a throwaway copy
    assert merged.keys() == reference.keys()
    for k in reference:
        torch.testing.assert_close(merged[k], reference[k], rtol=0, atol=1e-6)
    assert not any(v.requires_grad for v in merged.values())
    ids = torch.tensor([[1, 5, 9, 3]])
    assert student(input_ids=ids).logits.requires_grad  # the loss still has a graph to train


def test_the_snapshot_is_a_loadable_model_equal_to_the_adapted_student(tmp_path):
    student, tok = _lora_student(seed=1)
    save_merged(student, tok, tmp_path / "snap")
    assert (tmp_path / "snap" / "config.json").is_file()
    plain, _ = load_model(str(tmp_path / "snap"))
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, student(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


class _EngineStandIn:
    """vLLM's interface (``VLLMGenerator``): built on a model directory, weights synced before each round."""

    instances: list = []

    def __init__(self, model_dir: str, tokenizer, chat: bool = True, **engine_kwargs):
        assert (Path(model_dir) / "config.json").is_file(), "the engine's snapshot has no config.json"
        self.model, _ = load_model(model_dir)
        self.tokenizer, self.syncs, self.sums = tokenizer, 0, []
        _EngineStandIn.instances.append(self)

    def load_weights(self, model) -> None:
        state = merged_state_dict(model)
        self.model.load_state_dict(state, strict=True)
        self.syncs += 1
        self.sums.append(float(sum(v.double().sum() for v in state.values())))

    def generate_ids(self, prompt_ids, sampling):
        return HFGenerator(self.model, self.tokenizer, batch_size=16).generate_ids(prompt_ids, sampling)


@pytest.mark.parametrize(("method", "backend"), [("imitkd", "vllm"), ("distillm2", "vllm"), ("gkd", "hf-engine")])
def test_lora_training_with_an_engine_backend_keeps_its_adapters(method, backend, tmp_path, monkeypatch):
    """``vllm`` (a recording stand-in in place of the engine) and ``hf-engine`` (the CPU rehearsal backend) share
    the code path: snapshot, merge into a copy, sync, generate."""

    class Recording(distill.engines.HFEngine):  # the real hf-engine, keeping a handle on itself
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _EngineStandIn.instances.append(self)

    monkeypatch.setattr(distill.engines, "VLLMGenerator", _EngineStandIn)
    monkeypatch.setitem(distill.engines.ENGINES, "hf-engine", Recording)
    _EngineStandIn.instances = []
    data = write_train_data(tmp_path / "train.jsonl", n=16)
    cfg = load_config(TrainConfig, None, [*base_overrides(data, "tiny-llama", tmp_path / "out"), f"method={method}",
                                          "lora.enabled=true", "lora.r=4", f"gen_backend={backend}", "optim.max_steps=3",
                                          "validation=off", f"cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    train(cfg)
    (engine,) = _EngineStandIn.instances
    assert engine.syncs >= 1
    if backend == "vllm":  # each sync carried the student's current weights: they moved between rounds
        assert engine.syncs == 1 or len(set(engine.sums)) > 1
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["grad_norm"] and r["grad_norm"] > 0 for r in rows)  # adapters trained throughout
    # the exported student (its adapters merged at export, on the way out) moved away from the base weights
    final = load_model(str(tmp_path / "out" / "final"))[0].state_dict()
    base = load_from_config(cfg.student)[0].state_dict()  # the student it started from
    assert final.keys() == base.keys() and any(not torch.equal(final[k], base[k]) for k in base)
