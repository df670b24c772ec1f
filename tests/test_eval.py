"""The eval path end to end (tiny model, offline, through lm-eval) and the `tasks` / `score humaneval` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.lmeval import generation_kwargs, render, uses_chat
from bench.record import SCHEMA, Record
from tasks import get_task


def _record(tmp_path, run_name):
    return json.loads((tmp_path / run_name / "record.json").read_text())


def test_eval_one_task_per_category(tmp_path, capsys):
    """`eval` of a tiny model on an instruction, a code and a math task, offline, via the CLI."""
    rc = main(
        ["eval", "--model", "tiny-llama", "--tasks", "string-ops,tiny-func,arith"]
        + ["limit=2", "limits={arith: 3}", "max_new_tokens=8", "batch_size=4", f"output_dir={tmp_path}", "run_name=r"]
    )
    assert rc == 0
    out = capsys.readouterr()
    assert "wrote" in out.out and "fatal:" not in out.err  # lm-eval's `git describe` is kept quiet
    assert not (tmp_path / "r" / "lm_eval_data" / "hf_cache").exists()  # datasets' scratch copy and its locks
    assert not list(tmp_path.glob(".r.*"))  # the atomic run dir's temp dir is gone
    record = _record(tmp_path, "r")
    assert record["schema"] == SCHEMA and Record.from_dict(record).model.role == "model"  # the one record schema
    assert set(record["tasks"]) == {"string-ops", "tiny-func", "arith"}
    for name, info in record["tasks"].items():
        task = get_task(name)
        assert info["version"] == task.version and info["category"] == task.category
        n = 3 if name == "arith" else 2  # a per-task limit overrides the global one
        assert info["n"] == n and len(info["data_sha256"]) == 64
        assert info["generation"]["max_new_tokens"] == 8
        primary = record["metrics"][f"{name}/{task.primary_metric}"]
        assert 0.0 <= primary["value"] <= 1.0 and primary["primary"] and primary["category"] == task.category
        rows = [json.loads(x) for x in (tmp_path / "r" / "samples" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == n
        assert {"prompt", "completion", "score", "example_id", "seed", "target"} <= set(rows[0])
        assert rows[0]["prompt"].startswith("<|im_start|>user")  # tiny-llama has a chat template
    prov = record["provenance"]
    assert {"git_commit", "packages", "cpu_count", "sandbox"} <= set(prov)
    assert prov["packages"]["lm-eval"] and prov["packages"]["torch"]
    assert record["eval"]["config"]["model"] == "tiny-llama" and record["eval"]["seeds"] == [0]
    assert record["eval"]["wall_time_s"] > 0


def test_distillm_protocol_on_an_online_set_from_a_local_file(tmp_path):
    """DistiLLM v1 protocol (T=1, no_repeat_ngram_size=6, several seeds) on Dolly read from a hub-schema fixture."""
    from bench.evaluate import EvalConfig, run_eval

    fixture = Path(__file__).resolve().parents[1] / "bench" / "stand_in_data" / "dolly.jsonl"
    cfg = EvalConfig(
        model="tiny-llama",
        tasks=["dolly"],
        data_files=[f"dolly={fixture}"],
        protocol="distillm",
        seeds=[10, 20],
        limit=2,
        max_new_tokens=6,
        output_dir=str(tmp_path),
        run_name="d",
        chat="off",
    )
    record = run_eval(cfg)
    info = record.tasks["dolly"]
    assert [r["seed"] for r in info.per_seed] == [10, 20]
    rouge = record.metrics["dolly/rougeL"]
    assert rouge.std is not None and 0.0 <= rouge.value <= 1.0
    assert rouge.value == pytest.approx(sum(r["rougeL"] for r in info.per_seed) / 2)  # the mean over seeds
    assert info.generation["temperature"] == 1.0 and info.generation["no_repeat_ngram_size"] == 6
    assert info.source == f"file:{fixture}" and list(info.data_files) == [str(fixture)]
    rows = (tmp_path / "d" / "samples" / "dolly.jsonl").read_text().splitlines()
    assert len(rows) == 4 and json.loads(rows[0])["prompt"].startswith("Below is an instruction")


def test_resolve_tasks_builtin_names_and_data_file_errors(tmp_path):
    from bench.evaluate import EvalConfig, resolve_tasks
    from distill.config import ConfigError

    registry, builtin = resolve_tasks(EvalConfig(model="m", tasks=["arith", "lm_eval:gsm8k"]))
    assert [t.name for t in registry] == ["arith"] and builtin == ["gsm8k"]
    with pytest.raises(ConfigError, match="task=PATH"):
        resolve_tasks(EvalConfig(model="m", tasks=["dolly"], data_files=["dolly"]))
    with pytest.raises(FileNotFoundError):
        resolve_tasks(EvalConfig(model="m", tasks=["dolly"], data_files=[f"dolly={tmp_path / 'nope.jsonl'}"]))


def test_generation_kwargs_and_rendering(tiny_llama):
    _, tok = tiny_llama
    task = get_task("humaneval")
    spec = task.generation
    assert generation_kwargs(spec, chat=False, backend="hf")["until"] == list(spec.plain_stop)
    assert generation_kwargs(spec, chat=True, backend="hf")["until"] == []
    sampled = generation_kwargs(type(spec)(temperature=1.0, no_repeat_ngram_size=6), chat=True, backend="vllm")
    assert sampled["do_sample"] and "no_repeat_ngram_size" not in sampled
    ex = task.examples()[0]
    assert uses_chat(tok, "auto") and not uses_chat(tok, "off")
    assert render(task, ex, tok, chat=False) == ex.data["prompt"]
    assert render(task, ex, tok, chat=True).endswith("<|im_start|>assistant\n")


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--model", "tiny-llama", "--tasks", "nope", f"output_dir={tmp_path}"]) == 2
    assert "known tasks:" in capsys.readouterr().err
    assert main(["eval", "--tasks", "arith", f"output_dir={tmp_path}"]) == 2
    assert main(["eval", "--model", "tiny-llama", "--tasks", "arith", "limit=0"]) == 2
    assert main(["eval", "--model", "tiny-llama", "--tasks", "arith", "limits={gsm8k: 2}"]) == 2
    assert "limits: gsm8k not among the tasks" in capsys.readouterr().err


def test_tasks_command_lists_registry(capsys):
    assert main(["tasks", "--category", "code"]) == 0
    out = capsys.readouterr().out
    assert "humaneval" in out and "164" in out and "tiny-func" in out and "arith" not in out


def _write_samples(path, completions):
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in completions))


@pytest.fixture(scope="module")
def problems():
    from tasks.humaneval import load_problems

    return load_problems()


def test_score_humaneval_canonical_and_empty(tmp_path, problems, capsys):
    first = list(problems.values())[:12]
    canon = tmp_path / "canon.jsonl"
    _write_samples(canon, [(p["task_id"], p["canonical_solution"]) for p in first])
    assert main(["score", "humaneval", "--samples", str(canon), "--k", "1,10", "--workers", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pass@1"] == 1.0 and "pass@10" not in result and result["n_problems"] == 12
    rows = [json.loads(x) for x in (tmp_path / "canon.jsonl_results.jsonl").read_text().splitlines()]
    assert all(r["passed"] for r in rows) and len(rows) == 12
    empty = tmp_path / "empty.jsonl"
    _write_samples(empty, [(p["task_id"], "") for p in first for _ in range(2)])
    assert main(["score", "humaneval", "--samples", str(empty), "--k", "1,2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pass@1"] == 0.0 and result["pass@2"] == 0.0


def test_score_humaneval_bad_input(tmp_path, capsys):
    assert main(["score", "humaneval", "--samples", str(tmp_path / "missing.jsonl")]) == 2
    bad = tmp_path / "bad.jsonl"
    _write_samples(bad, [("HumanEval/9999", "")])
    assert main(["score", "humaneval", "--samples", str(bad)]) == 2
    assert "unknown task_id" in capsys.readouterr().err


@pytest.mark.slow
def test_score_humaneval_all_164_canonical(tmp_path, problems, capsys):
    canon = tmp_path / "all.jsonl"
    _write_samples(canon, [(p["task_id"], p["canonical_solution"]) for p in problems.values()])
    assert main(["score", "humaneval", "--samples", str(canon)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pass@1"] == 1.0 and result["n_problems"] == 164


def test_eval_on_the_val_split_scores_val_examples_and_refuses_where_there_is_none(tmp_path):
    from bench.evaluate import EvalConfig, run_eval
    from distill.config import ConfigError
    from tasks.base import TaskDataError

    cfg = EvalConfig(model="tiny-llama", tasks=["world-pick"], split="val", limit=2, max_new_tokens=4,
                     output_dir=str(tmp_path), run_name="v")  # fmt: skip
    info = run_eval(cfg).tasks["world-pick"]
    task = get_task("world-pick")
    assert info.split == "val" and info.data_sha256 == task.fingerprint("val") != task.fingerprint("test")
    rows = [json.loads(x) for x in (tmp_path / "v" / "samples" / "world-pick.jsonl").read_text().splitlines()]
    assert {r["example_id"].split("/")[0] for r in rows} == {"val"}
    with pytest.raises(TaskDataError, match="has no split 'val'"):
        run_eval(EvalConfig(model="tiny-llama", tasks=["arith"], split="val", output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="test split only"):
        run_eval(EvalConfig(model="tiny-llama", tasks=["lm_eval:gsm8k"], split="val", output_dir=str(tmp_path)))
