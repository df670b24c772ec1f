"""Device consistency, checked on a CPU-only machine (issue 13's bugs would each stop a GPU user at the first step).

* Every tensor factory in ``distill/`` names its device, or says on its line (or the line above) why it is built on
  the host (``# host``: collation, seeded orders, CPU-side random streams). An unplaced factory is how the α
  curriculum (``torch.tensor`` without a device, divided by a gap on the GPU) and HF sampling (CPU uniforms times a
  GPU CDF) broke.
* The samplers run on logits on PyTorch's ``meta`` device, where a CPU tensor mixed in is an error, as on a GPU.
* Stages that only read a model (teacher responses, fidelity, ``generate``) place it on the inference device.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FACTORIES = {"tensor", "as_tensor", "full", "zeros", "ones", "empty", "arange", "linspace", "eye", "rand", "randn",
             "randint", "randperm"}  # fmt: skip


def _unplaced(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    bad = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES):
            continue
        if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
            continue
        if any(k.arg == "device" for k in node.keywords):
            continue
        span = lines[max(0, node.lineno - 2) : node.end_lineno]
        if not any("# host" in line for line in span):
            bad.append(f"{path.parent.name}/{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return bad


def test_every_tensor_factory_in_distill_names_its_device_or_says_it_is_host_side():
    bad = [b for p in sorted((ROOT / "distill").glob("*.py")) for b in _unplaced(p)]
    assert not bad, (
        "tensor factories without a device (pass device=..., or mark '# host' with the reason):\n" + "\n".join(bad)
    )


def test_the_check_catches_the_curriculum_bug(tmp_path):
    """The α curriculum's old line, which failed on a GPU at the first step of epoch 2; and its fix."""
    old, fixed = tmp_path / "old.py", tmp_path / "fixed.py"
    old.write_text("import torch\nref = torch.tensor([0.0, 1.0], dtype=gap.dtype)\n")
    fixed.write_text("import torch\nref = torch.tensor([0.0, 1.0], dtype=gap.dtype, device=gap.device)\n")
    assert len(_unplaced(old)) == 1 and "torch.tensor" in _unplaced(old)[0] and not _unplaced(fixed)


@pytest.mark.parametrize("kw", [{"temperature": 1.0}, {"temperature": 0.7, "top_p": 0.9, "top_k": 5}])
def test_sampled_decoding_runs_on_logits_off_the_cpu(kw):
    """The inverse-CDF sampler's uniform draws come from CPU generators; they move to the logits' device."""
    from distill.generation import InverseCDFSampler, SamplingParams

    sampler = InverseCDFSampler(SamplingParams(**kw), [1, 2, 3])
    out = sampler(None, torch.randn(3, 11, device="meta"))
    assert out.device.type == "meta" and out.shape == (3, 11)


def test_a_stage_that_only_reads_a_model_places_it_on_the_inference_device(tmp_path, monkeypatch):
    """The responses stage loads the teacher onto the inference device (it once generated on the CPU even on a
    GPU box); ``meta`` stands in for the GPU here."""
    import distill.generation
    import distill.models
    from bench.run import SuiteRun
    from bench.suite import load_suite

    monkeypatch.setattr(distill.models, "inference_device", lambda: torch.device("meta"))
    seen = []

    class Stop(Exception):
        pass

    def recorder(teacher_cfg, model, *args, **kwargs):
        seen.append(next(model.parameters()).device.type)
        raise Stop

    monkeypatch.setattr(distill.generation, "TeacherResponses", recorder)
    run = SuiteRun(load_suite("smoke", ["teacher_train.enabled=false", f"output_root={tmp_path}",
                                        f"cache_dir={tmp_path / 'cache'}"]))  # fmt: skip
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "say hi", "response": None}) + "\n")
    run.output = lambda name: {s: str(prompts) for s in ("train", "val", "heldout", "labelled")}
    with pytest.raises(Stop):
        run._run_responses(tmp_path / "responses")
    assert seen == ["meta"]


@pytest.mark.parametrize("module", ["bench/run.py", "bench/run_eval.py", "bench/cmd_generate.py", "bench/fidelity.py"])
def test_read_only_stages_load_models_through_load_for_inference(module):
    """A model a stage only reads comes from ``load_for_inference`` (placed), never the bare ``load_from_config``."""
    assert "load_from_config" not in (ROOT / module).read_text()
