"""``distillm-bench methods`` and ``distillm-bench losses``: the method and loss registries, one line each."""

from __future__ import annotations

import argparse


def method_rows() -> list[list[object]]:
    from distill.methods import METHODS

    rows = []
    for name, m in METHODS.items():
        kwargs = ", ".join(f"{k}={v}" for k, v in m.loss_kwargs.items())
        sampling = f"T={m.student_temperature:g}, top-p={m.student_top_p:g}" if m.sampler != "offline" else "-"
        rows.append([name, m.label or name, m.sampler, m.loss + (f" ({kwargs})" if kwargs else ""), sampling,
                     "yes" if m.compared else "no"])  # fmt: skip
    return rows


def loss_rows() -> list[list[object]]:
    from distill.losses import LOSSES

    rows = []
    for name, spec in LOSSES.items():
        doc = (spec.fn.__doc__ or "").strip().split("\n")[0]
        hparams = ", ".join(f"{k}={v}" for k, v in spec.hparams.items()) or "-"
        rows.append([name, hparams, "pairwise" if spec.pairwise else "per token", doc])
    return rows


def _methods(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    headers = ["method", "label", "data policy", "loss", "student sampling", "in suites by default"]
    print(tabulate(method_rows(), headers=headers))
    print("\nA method is a data policy (distill/sampling.py SAMPLERS) plus a loss (distill/losses.py LOSSES).")
    return 0


def _losses(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    print(tabulate(loss_rows(), headers=["loss", "hyperparameters", "reduction", "definition"]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the distillation methods (data policy, loss, sampling)")
    p.set_defaults(func=_methods)
    p = sub.add_parser("losses", help="list the registered losses and their hyperparameters")
    p.set_defaults(func=_losses)
