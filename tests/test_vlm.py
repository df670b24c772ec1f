"""Vision-language distillation on a tiny LLaVA (``distill/vision.py``): image rows through every method, gradient
accumulation, exact resume, image-conditioned generation and pairing, and a mismatched processor refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.config import load_config
from distill.methods import METHODS
from distill.train import TrainConfig, train
from distill.vision import IMAGE_SIZE, PATCH

TEACHER, STUDENT = "vlm-h64-l2-f160", "vlm-h32-l1-f64"


@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> Path:
    """24 world-vqa training questions about 6 scenes, as JSONL rows with image files beside them."""
    from tasks import get_task

    out = tmp_path_factory.mktemp("vlm-data")
    (out / "images").mkdir()
    task = get_task("world-vqa")
    rows = []
    for ex in task.examples("train")[:24]:
        name = f"{abs(hash(ex.data['scene_key'])) % 10**12}.png"
        if not (out / "images" / name).exists():
            task.image(ex).save(out / "images" / name)
        rows.append({"prompt": ex.data["question"], "response": ex.target, "image": f"images/{name}"})
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out / "train.jsonl"


def _train(data: Path, out: Path, *extra: str) -> list[dict]:
    overrides = [f"data.train_file={data}", f"teacher.name={TEACHER}", f"student.name={STUDENT}", f"output_dir={out}",
                 "optim.batch_size=4", "data.max_prompt_len=64", "student_sampling.max_new_tokens=6",
                 "teacher_sampling.max_new_tokens=6", "gen_batch_size=16", "resume=never", *extra]  # fmt: skip
    train(load_config(TrainConfig, None, overrides))
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "model.safetensors"))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_takes_a_step_on_image_rows(method, image_data, tmp_path):
    from distill.models import load_model

    before = {k: v.clone() for k, v in load_model(STUDENT)[0].state_dict().items()}
    rows = _train(image_data, tmp_path, f"method={method}", "optim.max_steps=1", "data.val_fraction=0.2")
    assert rows and all(r["loss"] == r["loss"] for r in rows)  # finite (not NaN)
    model, tok = load_model(str(tmp_path / "final"))  # saved with its processor: loads back as a VLM
    assert (
        type(model).__name__ == "LlavaForConditionalGeneration"
        and tok.distill_images.tokens_per_image == (IMAGE_SIZE // PATCH) ** 2
    )
    after = model.state_dict()
    vision = [k for k in after if "vision_tower" in k or "multi_modal_projector" in k]
    assert vision and any(not torch.equal(after[k], before[k]) for k in vision)  # the image path gets gradients


def test_gradient_accumulation_invariance_on_image_rows(image_data, tmp_path):
    common = ["method=kd", "optim.max_steps=2", "save_every=0", "data.val_fraction=0"]
    a = _train(image_data, tmp_path / "4x1", *common, "optim.batch_size=4")
    b = _train(image_data, tmp_path / "1x4", *common, "optim.batch_size=1", "optim.grad_accum=4")
    for ra, rb in zip(a, b, strict=True):
        assert ra["tokens"] == rb["tokens"] and ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-7)
    wa, wb = _weights(tmp_path / "4x1"), _weights(tmp_path / "1x4")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["distillm", "distillm2"])
def test_resume_on_image_rows_equals_the_uninterrupted_run(method, image_data, tmp_path, monkeypatch):
    """DistiLLM's replay buffer and DistiLLM-2's pairs keep their images across a checkpoint."""
    from distill.train_config import TrainingInterrupted

    extra = (f"method={method}", "optim.max_steps=4", "save_every=2", "save_every_min=0", "data.val_fraction=0.2")
    if method == "distillm":  # phi from 1: the replay buffer holds student rows (and their images) at the checkpoint
        extra = (*extra, "distillm.phi_init=1.0")
    _train(image_data, tmp_path / "whole", *extra)
    monkeypatch.setenv("DISTILLM_FAULT_KILL_AT_STEP", "3")
    monkeypatch.setenv("DISTILLM_FAULT_SIGNAL", "SIGINT")
    with pytest.raises(TrainingInterrupted):
        _train(image_data, tmp_path / "cut", *extra)
    monkeypatch.delenv("DISTILLM_FAULT_KILL_AT_STEP")
    _train(image_data, tmp_path / "cut", *extra, "resume=auto")
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


def test_generation_and_pairs_are_conditioned_on_the_rows_image(image_data):
    from distill.data import collate, encode_example, read_examples
    from distill.generation import HFGenerator, SamplingParams
    from distill.models import load_model
    from distill.sampling import BatchedOnPolicySampler, Plan

    model, tok = load_model(STUDENT)
    examples = read_examples(image_data)
    rows = [encode_example(tok, e, 64, 96) for e in examples[:8]]
    assert all(r.image == e.image and r.prompt_ids.count(tok.distill_images.image_token_id) == (IMAGE_SIZE // PATCH) ** 2
               for r, e in zip(rows, examples, strict=False))  # fmt: skip
    batch = collate(rows[:4], tok.pad_token_id)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    seen = {}
    original = model.generate

    def recording(**kwargs):
        seen["pixel_values"] = kwargs.get("pixel_values")
        return original(**kwargs)

    model.generate = recording
    prompts = [r.prompt_ids for r in rows[:2]]
    HFGenerator(model, tok, batch_size=2).generate_ids(prompts, SamplingParams(max_new_tokens=3))
    assert seen["pixel_values"] is not None and seen["pixel_values"].shape[0] == 2
    # same question, another image: the logits differ (the image reaches the language model)
    other = next(r for r in rows if r.image != rows[0].image)
    swapped = collate([rows[0]], tok.pad_token_id) | {
        "pixel_values": collate([other], tok.pad_token_id)["pixel_values"]
    }
    with torch.no_grad():
        la = model(
            **{
                k: v
                for k, v in collate([rows[0]], tok.pad_token_id).items()
                if k in ("input_ids", "attention_mask", "pixel_values")
            }
        ).logits
        lb = model(**{k: v for k, v in swapped.items() if k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert not torch.allclose(la, lb)
    # batched on-policy curation: each teacher/student pair keeps its prompt's image
    plan = Plan(2, 1, 8, 1, None, 1, 0)
    sampler = BatchedOnPolicySampler(plan, 0, [r.prompt_ids for r in rows], lambda epoch: [[5, 6]] * 8,
                                     lambda prompts, seed: [[7, 8] for _ in prompts])  # fmt: skip
    batch_rows = sampler.batches(0)[0]
    half = len(batch_rows) // 2
    for t_row, s_row in zip(batch_rows[:half], batch_rows[half:], strict=True):
        assert t_row.image is not None and t_row.image == s_row.image and t_row.source == "teacher"


def test_a_mismatched_image_processor_is_refused_in_one_line(image_data, tmp_path):
    from distill.models import resolve_source

    teacher = Path(resolve_source(TEACHER))
    other = tmp_path / "teacher-other-processor"
    shutil.copytree(teacher, other)
    cfg_path = other / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["image_processor"]["image_mean"] = [0.5, 0.5, 0.5]
    cfg_path.write_text(json.dumps(cfg))
    from distill.models import TokenizerMismatchError

    with pytest.raises(TokenizerMismatchError, match="image processors differ") as err:
        _train(image_data, tmp_path / "out", "method=kd", "optim.max_steps=1", f"teacher.name={other}")
    assert "\n" not in str(err.value)
    with pytest.raises(TokenizerMismatchError, match="only the student is a vision-language model"):
        _train(image_data, tmp_path / "out2", "method=kd", "optim.max_steps=1", "teacher.name=world-h64-l2-f160")


def test_the_teacher_and_the_student_see_the_same_pixels(image_data, tmp_path, monkeypatch):
    """Both forwards of a KD step get the batch's pixel values (LLaVA would accept <image> tokens without them)."""
    import distill.loss_step as loss_step

    seen = []
    original = loss_step.LossComputer._forward

    def spy(self, model, batch, grad):
        seen.append((model is self.teacher, batch.get("pixel_values")))
        return original(self, model, batch, grad)

    monkeypatch.setattr(loss_step.LossComputer, "_forward", spy)
    _train(
        image_data, tmp_path, "method=kd", "optim.max_steps=1", "data.val_fraction=0", "teacher_cache.enabled=false"
    )
    teacher = [pv for is_teacher, pv in seen if is_teacher]
    student = [pv for is_teacher, pv in seen if not is_teacher]
    assert teacher and student and all(pv is not None for pv in teacher + student)
    assert all(torch.equal(t, s) for t, s in zip(teacher, student, strict=True))


def test_image_rows_refuse_the_teacher_cache_and_the_vllm_engine(image_data, tmp_path):
    from distill.train_config import TrainingError

    with pytest.raises(TrainingError, match="teacher cache does not support image rows"):
        _train(image_data, tmp_path / "a", "method=kd", "optim.max_steps=1", "teacher_cache.enabled=true")
    with pytest.raises(TrainingError, match="vLLM engine does not pass images"):
        _train(image_data, tmp_path / "b", "method=gkd", "optim.max_steps=1", "gen_backend=vllm")


def test_the_truncation_count_includes_the_image_tokens(image_data):
    from distill.data import encode_example, read_examples, truncation
    from distill.models import load_model
    from distill.train_config import DataConfig

    _, tok = load_model(STUDENT)
    examples = read_examples(image_data)[:6]
    longest = max(len(encode_example(tok, e, 64, 10**6).prompt_ids) for e in examples)
    fits = DataConfig(train_file=str(image_data), max_prompt_len=64, max_len=longest + 40)
    cut = DataConfig(train_file=str(image_data), max_prompt_len=64, max_len=longest + 1)  # room for 1 token only
    assert truncation(tok, examples, fits)["responses"] == 0
    assert truncation(tok, examples, cut)["responses"] > 0  # prompts counted with their image tokens
