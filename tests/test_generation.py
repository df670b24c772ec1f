"""Generation backends: determinism, batched == unbatched, sampling, stop strings, vLLM request building."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from distill.config import ConfigError, load_config
from distill.engines import build_vllm_requests, make_generator
from distill.generation import (
    HFGenerator,
    InverseCDFSampler,
    SamplingParams,
    render_prompt,
    stream_seed,
)

PROMPTS = [
    "What is 2 + 3?",
    "Write a function that adds two numbers.",
    "The capital of France is",
    "Hi",
    "Explain why the river is long and the tree is tall, in one sentence please.",
]


def texts(out):
    return [[c.text for c in row] for row in out]


def test_render_prompt_applies_chat_template(tiny_llama):
    _, tok = tiny_llama
    text, special = render_prompt(tok, "hi")
    assert special and text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt(tok, "hi", chat=False) == ("hi", False)
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert render_prompt(tok, msgs)[0].startswith("<|im_start|>system\ns<|im_end|>")


def test_greedy_is_deterministic_and_batched_equals_unbatched(tiny_llama):
    model, tok = tiny_llama
    sp = SamplingParams(max_new_tokens=12)
    batched = HFGenerator(model, tok, batch_size=8).generate(PROMPTS, sp)
    again = HFGenerator(model, tok, batch_size=8).generate(PROMPTS, sp)
    one_by_one = [HFGenerator(model, tok, batch_size=1).generate([p], sp)[0] for p in PROMPTS]
    pairs = HFGenerator(model, tok, batch_size=2).generate(PROMPTS, sp)
    assert texts(batched) == texts(again) == texts(one_by_one) == texts(pairs)
    assert [r[0].token_ids for r in batched] == [r[0].token_ids for r in one_by_one]
    for row in batched:
        c = row[0]
        assert len(c.token_ids) <= 12
        assert c.finish_reason == ("stop" if c.token_ids and c.token_ids[-1] == tok.eos_token_id else "length")


def test_greedy_matches_plain_hf_generate(tiny_llama):
    model, tok = tiny_llama
    text, _ = render_prompt(tok, PROMPTS[0])
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    ref = model.generate(**ids, do_sample=False, max_new_tokens=10, pad_token_id=tok.pad_token_id)
    ref_ids = ref[0, ids["input_ids"].shape[1] :].tolist()
    if tok.eos_token_id in ref_ids:
        ref_ids = ref_ids[: ref_ids.index(tok.eos_token_id) + 1]
    (row,) = HFGenerator(model, tok).generate([PROMPTS[0]], SamplingParams(max_new_tokens=10))
    assert row[0].token_ids == ref_ids


def test_sampling_is_seeded_and_independent_of_batching(tiny_llama):
    model, tok = tiny_llama
    sp = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=10, n=3, seed=7)
    a = HFGenerator(model, tok, batch_size=16).generate(PROMPTS, sp)
    b = HFGenerator(model, tok, batch_size=3).generate(PROMPTS[::-1], sp)[::-1]
    assert texts(a) == texts(b)
    assert all(len(row) == 3 for row in a)
    assert len({t for row in texts(a) for t in row}) > len(PROMPTS)  # samples differ from each other
    c = HFGenerator(model, tok, batch_size=16).generate(PROMPTS, SamplingParams(**{**vars(sp), "seed": 8}))
    assert texts(a) != texts(c)


def test_top_k_one_equals_greedy(tiny_llama):
    model, tok = tiny_llama
    gen = HFGenerator(model, tok, batch_size=8)
    greedy = gen.generate(PROMPTS, SamplingParams(max_new_tokens=8))
    topk1 = gen.generate(PROMPTS, SamplingParams(temperature=0.7, top_k=1, max_new_tokens=8, seed=3))
    assert texts(greedy) == texts(topk1)


def test_stop_strings_truncate(tiny_llama):
    model, tok = tiny_llama
    gen = HFGenerator(model, tok, batch_size=8)
    free = gen.generate(PROMPTS, SamplingParams(max_new_tokens=24))
    # pick a stop string that occurs in some free completion (random weights: use its 3rd character)
    sample = next(r[0].text for r in free if len(r[0].text) > 4)
    stop = sample[2]
    stopped = gen.generate(PROMPTS, SamplingParams(max_new_tokens=24, stop=[stop]))
    for f, s in zip(free, stopped, strict=True):
        assert stop not in s[0].text
        assert f[0].text.startswith(s[0].text)
        if stop in f[0].text:
            assert s[0].finish_reason == "stop" and s[0].text == f[0].text[: f[0].text.index(stop)]


def test_inverse_cdf_sampler_matches_the_distribution():
    sp = SamplingParams(temperature=1.0)
    probs = torch.tensor([0.1, 0.2, 0.7, 0.0])
    logits = probs.clamp_min(1e-30).log().expand(4000, 4).clone()
    logits[:, 3] = float("-inf")
    sampler = InverseCDFSampler(sp, [stream_seed(0, "p", i) for i in range(4000)])
    out = sampler(torch.zeros(4000, 1, dtype=torch.long), logits)
    picks = out.argmax(-1)
    assert torch.isinf(out).sum(-1).eq(3).all()  # exactly one finite entry per row
    freq = torch.bincount(picks, minlength=4).float() / 4000
    assert freq[3] == 0
    torch.testing.assert_close(freq[:3], probs[:3], atol=0.03, rtol=0)


def test_top_p_keeps_the_nucleus_only():
    sp = SamplingParams(temperature=1.0, top_p=0.75)
    logits = torch.tensor([[0.1, 0.2, 0.7]]).log().expand(2000, 3).clone()
    out = InverseCDFSampler(sp, [stream_seed(1, "q", i) for i in range(2000)])(None, logits)
    picks = torch.bincount(out.argmax(-1), minlength=3)
    assert picks[0] == 0 and picks[1] > 0 and picks[2] > picks[1]  # 0.7 alone < 0.75, so 0.2 is kept


def test_sampling_params_validation():
    with pytest.raises(ConfigError, match="out of range"):
        load_config(SamplingParams, None, ["top_p=0"])
    with pytest.raises(ConfigError, match="stop strings must be non-empty"):
        SamplingParams(stop=[""])


def test_build_vllm_requests_is_pure_and_per_prompt_seeded():
    sp = SamplingParams(temperature=0.8, top_p=0.95, top_k=0, max_new_tokens=64, stop=["\n\n"], seed=42, n=2)
    reqs = build_vllm_requests(["a", "b"], sp)
    assert [t for t, _ in reqs] == ["a", "b"]
    kw = reqs[0][1]
    assert kw == {
        "n": 2,
        "temperature": 0.8,
        "top_p": 0.95,
        "top_k": -1,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "seed": stream_seed(42, "a", 0),
        "skip_special_tokens": True,
    }
    assert reqs[0][1]["seed"] != reqs[1][1]["seed"]
    assert build_vllm_requests(["a"], SamplingParams(top_k=5))[0][1]["top_k"] == 5
    with pytest.raises(ValueError, match="no_repeat_ngram_size is not supported"):
        build_vllm_requests(["a"], SamplingParams(no_repeat_ngram_size=6))


def test_make_generator_refuses_unknown_backends(tiny_llama):
    model, tok = tiny_llama
    assert isinstance(make_generator("hf", model, tok), HFGenerator)
    with pytest.raises(ValueError, match="allowed: hf, vllm"):
        make_generator("tgi", model, tok)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="vllm extra"):
            make_generator("vllm", None, tok, model_dir="/nonexistent")


def test_no_repeat_ngram_is_honoured(tiny_llama):
    model, tok = tiny_llama
    out = HFGenerator(model, tok).generate(PROMPTS, SamplingParams(max_new_tokens=30, no_repeat_ngram_size=2))
    for row in out:
        ids = row[0].token_ids
        grams = [tuple(ids[i : i + 2]) for i in range(len(ids) - 1)]
        assert len(grams) == len(set(grams))


@pytest.mark.slow  # a CLI subprocess end to end: ~7 s
def test_generate_cli_writes_config_and_completions(tmp_path):
    out = tmp_path / "gen"
    cmd = [sys.executable, "-m", "bench.cli", "generate", "model.name=tiny-llama", "sampling.max_new_tokens=5"]
    res = subprocess.run([*cmd, f"output_dir={out}", "prompts=[a,b]"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a", "b"] and all(r["tokens"] <= 5 for r in rows)
    assert "name: tiny-llama" in (out / "config.yaml").read_text()
    bad = subprocess.run([*cmd, "sampling.temprature=1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "did you mean 'temperature'" in bad.stderr


@pytest.mark.gpu
def test_vllm_backend_on_gpu(tmp_path):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from distill.models import build_tiny, load_model

    path = build_tiny("tiny-llama")
    model, tok = load_model(str(path))
    sp = SamplingParams(max_new_tokens=8)
    gen = make_generator("vllm", None, tok, model_dir=str(path), dtype="float32", gpu_memory_utilization=0.3)
    out = gen.generate(PROMPTS[:2], sp)
    ref = HFGenerator(model.cuda(), tok).generate(PROMPTS[:2], sp)
    assert texts(out) == texts(ref)
