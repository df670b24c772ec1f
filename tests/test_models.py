"""Model sources: tiny save/load round trip, pruned students, vocab alignment."""

from __future__ import annotations

import time

import pytest
import torch

from distill.models import (
    ModelConfig,
    ModelSourceError,
    TokenizerMismatchError,
    align_logits,
    aligned_vocab_size,
    build_tiny,
    count_params,
    derive_student,
    evenly_spaced,
    load_from_config,
    load_model,
    parse_tiny_name,
    resolve_source,
)


def logits_of(model, tok, text="def add(x, y):\n    return x + y"):
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def test_tiny_round_trip_through_save_pretrained(tmp_path, tiny_llama):
    model, tok = tiny_llama
    path = build_tiny("tiny-llama")
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    # the fixture's model was itself loaded from that directory; a second load gives the same logits
    again, tok2 = load_model(str(path))
    assert tok2.get_vocab() == tok.get_vocab() and tok2.chat_template == tok.chat_template
    torch.testing.assert_close(logits_of(again, tok2), logits_of(model, tok), rtol=0, atol=0)
    # a fresh build in another cache dir is identical (deterministic tokenizer and seeded weights)
    other = build_tiny("tiny-llama", cache_dir=tmp_path)
    fresh, tok3 = load_model(str(other))
    assert tok3.get_vocab() == tok.get_vocab()
    torch.testing.assert_close(logits_of(fresh, tok3), logits_of(model, tok), rtol=0, atol=0)


def test_tiny_tokenizer_has_chat_template_and_specials(tiny_llama):
    _, tok = tiny_llama
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.pad_token_id != tok.eos_token_id and len(tok) == 512
    assert tok.decode(tok("The capital of France is Paris.")["input_ids"]) == "The capital of France is Paris."


def test_tiny_qwen2_and_name_parsing():
    model, tok = load_model("tiny-qwen2-h32-l2-v400")
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2 and len(tok) == 400
    assert parse_tiny_name("tiny-llama-p64") == {"arch": "llama", "h": 64, "l": 4, "v": 512, "p": 64}
    assert parse_tiny_name("tiny-gpt2-h32")["arch"] == "gpt2"  # the DistiLLM GPT-2 suite's stand-in
    with pytest.raises(ModelSourceError, match="bad tiny model name"):
        parse_tiny_name("tiny-mamba")


def test_unknown_sources_fail_with_one_line():
    with pytest.raises(ModelSourceError, match="model directory not found"):
        resolve_source("./no/such/dir")
    with pytest.raises(ModelSourceError, match="unknown model source 'gpt-9'"):
        resolve_source("gpt-9")


def test_evenly_spaced():
    assert evenly_spaced(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29]  # the layers measured in sizing.md
    assert evenly_spaced(4, 1) == [0] and evenly_spaced(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        evenly_spaced(4, 5)


def test_pruned_student_copies_weights_and_shares_tokenizer(tiny_llama):
    teacher, tok = tiny_llama
    student = derive_student(teacher, layers=2)
    assert student.config.num_hidden_layers == 2
    assert count_params(student) < count_params(teacher)
    keep = evenly_spaced(teacher.config.num_hidden_layers, 2)
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for j, i in enumerate(keep):
        for suffix in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
            assert torch.equal(s_sd[f"model.layers.{j}.{suffix}"], t_sd[f"model.layers.{i}.{suffix}"])
    assert torch.equal(s_sd["model.embed_tokens.weight"], t_sd["model.embed_tokens.weight"])
    assert torch.equal(s_sd["model.norm.weight"], t_sd["model.norm.weight"])
    # the student is an independent copy
    with torch.no_grad():
        student.model.norm.weight.add_(1.0)
    assert not torch.equal(student.model.norm.weight, teacher.model.norm.weight)


def test_default_student_has_at_most_half_the_parameters(tiny_llama):
    teacher, _ = tiny_llama
    student = derive_student(teacher)
    assert count_params(student) <= count_params(teacher) / 2
    assert student.config.num_hidden_layers >= 1


def test_keeping_all_layers_reproduces_the_teacher(tiny_llama):
    teacher, tok = tiny_llama
    full = derive_student(teacher, layers=teacher.config.num_hidden_layers)
    torch.testing.assert_close(logits_of(full, tok), logits_of(teacher, tok), rtol=0, atol=0)


def test_mlp_narrowing(tiny_llama):
    teacher, tok = tiny_llama
    student = derive_student(teacher, layers=[0, 3], mlp_width=64)
    assert student.config.intermediate_size == 64
    assert torch.equal(student.model.layers[1].mlp.gate_proj.weight, teacher.model.layers[3].mlp.gate_proj.weight[:64])
    assert torch.equal(
        student.model.layers[1].mlp.down_proj.weight, teacher.model.layers[3].mlp.down_proj.weight[:, :64]
    )
    assert torch.isfinite(logits_of(student, tok)).all()
    with pytest.raises(ValueError, match="exceeds"):
        derive_student(teacher, layers=1, mlp_width=10_000)


def test_pruned_student_from_config():
    model, tok = load_from_config(ModelConfig(name="tiny-llama", prune_layers=2, dtype="bfloat16"))
    assert model.config.num_hidden_layers == 2 and next(model.parameters()).dtype == torch.bfloat16
    assert len(tok) == 512


def test_vocab_alignment_by_tokenizer_length(tiny_llama):
    teacher, tok = tiny_llama
    padded, tok_p = load_model("tiny-llama-p64")  # same tokenizer, 64 extra head rows (Qwen 152064 vs 151936)
    assert padded.get_output_embeddings().weight.shape[0] == len(tok) + 64
    n = aligned_vocab_size(padded, teacher, tok_p, tok)
    assert n == len(tok) == 512
    lt, lp = logits_of(teacher, tok), logits_of(padded, tok_p)
    assert lp.shape[-1] == 576 and align_logits(lp, n).shape == lt.shape
    assert align_logits(lp, n).data_ptr() == lp.data_ptr()  # a view, no copy


def test_tokenizer_mismatch_is_refused_with_both_sizes(tiny_llama):
    teacher, tok = tiny_llama
    other, tok_o = load_model("tiny-llama-v600")
    with pytest.raises(TokenizerMismatchError) as err:
        aligned_vocab_size(teacher, other, tok, tok_o)
    assert "vocab 512" in str(err.value) and "vocab 600" in str(err.value)


@pytest.mark.slow
def test_smollm2_loads_completes_paris_and_reloads_fast():
    from distill.generation import HFGenerator, SamplingParams

    model, tok = load_model("smollm2-135m-instruct")
    assert count_params(model) == 134_515_008 and len(tok) == 49152
    gen = HFGenerator(model, tok, chat=False)
    (out,) = gen.generate(["The capital of France is"], SamplingParams(max_new_tokens=8))
    assert "Paris" in out[0].text
    t0 = time.perf_counter()
    load_model("smollm2-135m-instruct")
    assert time.perf_counter() - t0 < 2.0
