"""Shared fixtures. Tests run offline; tiny models are built in-process into a per-session cache."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each, no oversubscription
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """Point the model cache at a session temp dir unless the caller chose one (keeps ~/.cache clean)."""
    if "DISTILLM_CACHE" in os.environ:
        yield os.environ["DISTILLM_CACHE"]
        return
    path = tmp_path_factory.mktemp("distillm-cache")
    os.environ["DISTILLM_CACHE"] = str(path)
    yield str(path)
    del os.environ["DISTILLM_CACHE"]


@pytest.fixture(scope="session")
def tiny_llama(_model_cache):
    from distill.models import load_model

    return load_model("tiny-llama")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
