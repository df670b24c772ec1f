"""Fake quantisation: a degraded student to recover by distillation (DistiLLM-2 Table 9, an INT4 Phi-3.5).

:func:`fake_quantize_` rounds every ``nn.Linear`` weight of the decoder layers to a ``bits``-bit grid and writes the
dequantised values back in place, so the model runs through the ordinary float code path. The grid is
round-to-nearest (RTN), symmetric, one scale per group of ``group_size`` consecutive input columns of each output row:
``scale = max|w| / (2**(bits-1) - 1)`` over the group and ``w -> scale * clamp(round(w / scale), -qmax, qmax)``, so a
group takes at most ``2**bits - 1`` distinct values (zero included). The (tied) token embedding and the lm_head are
spared. The result is deterministic: no data, no randomness, ties round half to even.
"""

from __future__ import annotations

from typing import Any

import torch


def _decoder_linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """``(name, module)`` of every Linear in the decoder layers; falls back to every Linear of the model."""
    spared = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        mod = getattr(model, get, lambda: None)()
        if mod is not None and getattr(mod, "weight", None) is not None:
            spared.add(id(mod.weight))
    root: torch.nn.Module = model
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList):
        root = decoder.layers
    prefix = next((n for n, m in model.named_modules() if m is root), "")
    out = []
    for name, mod in root.named_modules():
        if isinstance(mod, torch.nn.Linear) and id(mod.weight) not in spared:
            out.append((f"{prefix}.{name}" if prefix and name else prefix or name, mod))
    return out


def quantize_tensor(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """The RTN-symmetric fake-quantised copy of a 2-D weight ``[out, in]`` (float32 result)."""
    qmax = 2 ** (bits - 1) - 1
    out_f, in_f = w.shape
    g = w.detach().to(torch.float32).reshape(out_f, in_f // group_size, group_size)
    scale = g.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
    return (torch.round(g / scale).clamp_(-qmax, qmax) * scale).reshape(out_f, in_f)


def fake_quantize_(model: torch.nn.Module, bits: int, group_size: int) -> dict[str, Any]:
    """Fake-quantise the decoder's linear weights in place; return a report.

    The report holds ``bits``, ``group_size``, ``layers`` (how many Linear weights were quantised), ``params``
    (their element count) and ``mean_rel_error``: the mean over those layers of ``||W_q - W||_F / ||W||_F``.
    Every layer's ``in_features`` is checked against ``group_size`` before any weight changes.
    """
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"quantize bits must be an integer in [2, 8], got {bits!r}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"quantize group size must be a positive integer, got {group_size!r}")
    linears = _decoder_linears(model)
    if not linears:
        raise ValueError(f"no nn.Linear layers to quantise in {type(model).__name__}")
    for name, mod in linears:
        if mod.in_features % group_size:
            raise ValueError(
                f"quantize group size {group_size} does not divide {name}.in_features={mod.in_features} "
                f"(weight {mod.out_features}x{mod.in_features}); choose a divisor of every layer's in_features"
            )
    errors, params = [], 0
    with torch.no_grad():
        for _, mod in linears:
            w = mod.weight
            q = quantize_tensor(w, bits, group_size)
            ref = w.detach().to(torch.float32)
            errors.append(float((q - ref).norm() / ref.norm().clamp_min(1e-30)))
            w.copy_(q.to(w.dtype))
            params += w.numel()
    return {
        "bits": bits,
        "group_size": group_size,
        "layers": len(linears),
        "params": params,
        "mean_rel_error": sum(errors) / len(errors),
    }
