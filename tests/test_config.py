"""Config loading: YAML + key=value overrides, strict validation with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from bench.cmd_generate import GenerateConfig
from distill.config import ConfigError, config_to_dict, load_config, require, save_config


@dataclass
class Optim:
    lr: float = field(default=1e-3, metadata={"min": 0.0, "exclusive_min": True})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup: int = field(default=0, metadata={"min": 0})


@dataclass
class Cfg:
    name: str = "run"
    mode: Literal["token", "sequence"] = "token"
    alpha: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    steps: int | None = None
    flag: bool = False
    kwargs: dict[str, float] = field(default_factory=dict)
    optim: Optim = field(default_factory=Optim)

    def __post_init__(self):
        require(not (self.flag and self.steps == 0), "flag needs steps > 0")


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_defaults_yaml_and_overrides(tmp_path):
    p = write(tmp_path, {"name": "a", "optim": {"lr": 0.01}, "kwargs": {"beta": 0.5}})
    cfg = load_config(Cfg, p, ["optim.warmup=5", "mode=sequence", "optim.lr=1e-4", "kwargs.gamma=2", "steps=null"])
    assert cfg.name == "a" and cfg.mode == "sequence" and cfg.optim.warmup == 5
    assert cfg.optim.lr == pytest.approx(1e-4)  # "1e-4" is a str to PyYAML; coerced to float
    assert cfg.kwargs == {"beta": 0.5, "gamma": 2.0} and cfg.steps is None
    assert load_config(Cfg, None, ["optim.betas=0.8,0.9"]).optim.betas == [0.8, 0.9]
    assert load_config(Cfg, None, ["optim.betas=[0.5, 0.6]"]).optim.betas == [0.5, 0.6]
    assert load_config(Cfg, None, ["name=123"]).name == "123"  # str field keeps the raw text


def test_unknown_key_in_file_names_key_file_and_allowed(tmp_path):
    p = write(tmp_path, {"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, p)
    msg = one_line(err)
    assert str(p) in msg and "'optim.lrr'" in msg and "did you mean 'lr'" in msg and "betas, lr, warmup" in msg


def test_unknown_key_on_command_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, write(tmp_path, {}), ["optim.lrr=1"])
    msg = one_line(err)
    assert "command line override 'optim.lrr=1'" in msg and "unknown key 'optim.lrr'" in msg


@pytest.mark.parametrize(
    ("data", "overrides", "expect"),
    [
        ({"alpha": "abc"}, [], ["'alpha'", "expected float", "'abc'"]),
        ({"flag": "yes please"}, [], ["'flag'", "expected bool"]),
        ({"optim": {"warmup": 1.5}}, [], ["'optim.warmup'", "expected int"]),
        ({"optim": 3}, [], ["'optim'", "section"]),
        ({}, ["steps=many"], ["'steps'", "expected int or null"]),
        ({}, ["optim.betas=a,b"], ["'optim.betas[0]'", "expected float"]),
    ],
)
def test_bad_type(tmp_path, data, overrides, expect):
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, write(tmp_path, data), overrides)
    msg = one_line(err)
    for part in expect:
        assert part in msg


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        (["alpha=1.5"], ["'alpha'", "out of range", "0.0 <= value and value <= 1.0"]),
        (["optim.lr=0"], ["'optim.lr'", "0.0 < value"]),
        (["mode=chunk"], ["'mode'", "'chunk'", "allowed values: one of 'token', 'sequence'"]),
        (["flag=true", "steps=0"], ["flag needs steps > 0"]),
    ],
)
def test_bad_value(overrides, expect):
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, None, overrides)
    msg = one_line(err)
    for part in expect:
        assert part in msg


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1"])
def test_malformed_override(item):
    with pytest.raises(ConfigError, match="malformed override"):
        load_config(Cfg, None, [item])


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Cfg, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Cfg, bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Cfg, bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(Cfg, None, ["optim.lr=3e-4", "kwargs.a=1", "mode=sequence"])
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(Cfg, path)
    assert again == cfg and config_to_dict(again)["optim"]["lr"] == pytest.approx(3e-4)
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic write leaves no temp files


SHIPPED = sorted(Path(__file__).resolve().parents[1].glob("bench/configs/**/generate*.yaml"))


def test_shipped_configs_exist():
    assert len(SHIPPED) > 0


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_generate_configs_load(path):
    cfg = load_config(GenerateConfig, path)
    assert cfg.sampling.max_new_tokens > 0


def test_the_shipped_example_configs_load_and_the_smallest_one_trains(tmp_path):
    from bench.evaluate import EvalConfig
    from bench.suite import load_suite
    from distill.synthetic import write_synthetic_data
    from distill.train import TrainConfig, train

    examples = Path(__file__).resolve().parent.parent / "bench" / "configs" / "examples"
    data = write_synthetic_data(tmp_path / "d.jsonl", 24)
    names = sorted(p.name for p in examples.glob("*.yaml"))
    assert names == ["eval.yaml", "generate.yaml", "suite_custom.yaml", "train_distillm.yaml", "train_distillm2.yaml",
                     "train_gkd.yaml", "train_kd.yaml"]  # fmt: skip
    for name in names:
        path = examples / name
        if name.startswith("train_"):
            cfg = load_config(TrainConfig, path, [f"data.train_file={data}"])
            assert cfg.method == name[len("train_") : -len(".yaml")]
        elif name == "eval.yaml":
            assert load_config(EvalConfig, path, []).tasks
        elif name == "generate.yaml":
            from bench.cmd_generate import GenerateConfig

            assert load_config(GenerateConfig, path, []).sampling.n == 2
        else:
            assert load_suite(str(path)).methods == ["sft", "kd"]
    cfg = load_config(TrainConfig, examples / "train_kd.yaml",
                      [f"data.train_file={data}", f"output_dir={tmp_path / 'o'}", "optim.max_steps=1"])  # fmt: skip
    assert train(cfg)["steps"] == 1
