"""Fake quantisation (distill/quantize.py) and the quantised model source (ModelConfig.quantize_bits)."""

from __future__ import annotations

import copy

import pytest
import torch

from distill.config import ConfigError, load_config
from distill.generation import HFGenerator, SamplingParams
from distill.models import ModelConfig, load_from_config
from distill.quantize import _decoder_linears, fake_quantize_, quantize_tensor


@pytest.fixture
def model(tiny_llama):
    return copy.deepcopy(tiny_llama[0])  # the session fixture must stay unquantised


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def test_decoder_linears_are_every_layer_projection_and_spare_embedding_and_head(model):
    names = [n for n, _ in _decoder_linears(model)]
    n_layers = model.config.num_hidden_layers
    assert len(names) == 7 * n_layers  # q k v o gate up down
    assert all(n.startswith("model.layers.") for n in names)
    assert not any("embed" in n or "lm_head" in n for n in names)


def test_eight_bits_barely_moves_the_weights_two_bits_moves_them_a_lot(model):
    before = {n: m.weight.detach().clone() for n, m in _decoder_linears(model)}
    rep8 = fake_quantize_(copy.deepcopy(model), bits=8, group_size=16)
    assert rep8["layers"] == len(before) and rep8["params"] == sum(w.numel() for w in before.values())
    assert rep8["mean_rel_error"] < 0.01
    m8 = copy.deepcopy(model)
    fake_quantize_(m8, bits=8, group_size=16)
    assert max(_rel(m.weight, before[n]) for n, m in _decoder_linears(m8)) < 0.01
    rep2 = fake_quantize_(model, bits=2, group_size=16)
    assert rep2["mean_rel_error"] > 0.3
    assert min(_rel(m.weight, before[n]) for n, m in _decoder_linears(model)) > 0.3


@pytest.mark.parametrize("bits,group", [(2, 16), (3, 32), (4, 16), (8, 32)])
def test_each_group_takes_at_most_two_to_the_bits_levels(model, bits, group):
    fake_quantize_(model, bits=bits, group_size=group)
    for name, mod in _decoder_linears(model):
        w = mod.weight.detach()
        groups = w.reshape(w.shape[0], -1, group).reshape(-1, group)
        levels = max(len(torch.unique(g)) for g in groups)
        assert levels <= 2**bits, (name, levels)
        # symmetric grid: every value is an integer multiple of the group's scale
        scale = groups.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
        k = groups / scale.clamp_min(1e-30)
        torch.testing.assert_close(k, k.round(), rtol=0, atol=1e-4)


def test_embedding_head_and_norms_are_untouched(model):
    quantised = {id(m.weight) for _, m in _decoder_linears(model)}
    others = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in quantised}
    assert any("embed_tokens" in n for n in others) and any("norm" in n for n in others)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    fake_quantize_(model, bits=2, group_size=16)
    for n, p in model.named_parameters():
        if n in others:
            assert torch.equal(p, others[n]), n
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_quantisation_is_deterministic_and_idempotent(model):
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    ra, rb = fake_quantize_(a, 3, 16), fake_quantize_(b, 3, 16)
    assert ra == rb
    for (_, x), (_, y) in zip(_decoder_linears(a), _decoder_linears(b), strict=True):
        assert torch.equal(x.weight, y.weight)
    again = {n: m.weight.detach().clone() for n, m in _decoder_linears(a)}
    fake_quantize_(a, 3, 16)  # the grid maps onto itself
    for n, m in _decoder_linears(a):
        torch.testing.assert_close(m.weight, again[n], rtol=0, atol=1e-7)


def test_a_group_size_that_does_not_divide_a_layer_is_a_one_line_error(model):
    before = {n: m.weight.detach().clone() for n, m in _decoder_linears(model)}
    # tiny-llama: hidden 64, MLP 160; 64 divides the attention inputs but not down_proj's 160
    with pytest.raises(ValueError, match=r"group size 64 does not divide model\.layers\.0\.mlp\.down_proj") as err:
        fake_quantize_(model, bits=4, group_size=64)
    assert "\n" not in str(err.value) and "160" in str(err.value)
    for n, m in _decoder_linears(model):  # checked before anything changed
        assert torch.equal(m.weight, before[n])
    with pytest.raises(ValueError, match="bits"):
        fake_quantize_(model, bits=1, group_size=16)


def test_quantize_tensor_zero_group_and_rounding():
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, -0.5, 0.26, 0.1]])
    q = quantize_tensor(w, bits=3, group_size=4)  # qmax 3: scale 1/3 in the second group
    assert torch.equal(q[0, :4], torch.zeros(4))
    torch.testing.assert_close(q[0, 4:], torch.tensor([1.0, -2 / 3, 1 / 3, 0.0]))


def test_quantised_model_source_loads_and_generates(tiny_llama):
    ref, tok0 = tiny_llama
    cfg = ModelConfig(name="tiny-llama", quantize_bits=4, quantize_group=16)
    assert cfg.is_derived and not cfg.is_pruned
    model, tok = load_from_config(cfg)
    assert tok.get_vocab() == tok0.get_vocab() and next(model.parameters()).dtype == torch.float32
    w, w0 = model.model.layers[0].self_attn.q_proj.weight, ref.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(w, w0) and 0.01 < _rel(w, w0) < 0.3
    assert torch.equal(model.model.embed_tokens.weight, ref.model.embed_tokens.weight)
    again, _ = load_from_config(cfg)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True))
    out = HFGenerator(model, tok, batch_size=2).generate(
        ["What is 2 + 3?", "Name a city."], SamplingParams(max_new_tokens=6)
    )
    assert len(out) == 2 and all(len(c[0].token_ids) >= 1 for c in out)
    # pruned then quantised, cast to the requested dtype
    both, _ = load_from_config(
        ModelConfig(name="tiny-llama", prune_layers=2, quantize_bits=3, quantize_group=32, dtype="bfloat16")
    )
    assert both.config.num_hidden_layers == 2 and next(both.parameters()).dtype == torch.bfloat16


def test_quantize_fields_are_validated_by_the_config_loader():
    cfg = load_config(ModelConfig, None, ["quantize_bits=3", "quantize_group=32"])
    assert cfg.quantize_bits == 3 and cfg.quantize_group == 32
    for bad in ("quantize_bits=1", "quantize_bits=9", "quantize_group=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(ModelConfig, None, [bad])
