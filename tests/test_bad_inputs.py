"""The catalogue of bad inputs: each ends in exit code 2 and one line on stderr naming the cause, with no traceback
and nothing half-written. Every case runs the real command line in-process, in an empty working directory."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bench.cli import main

GOOD = '{"prompt": "add 1 and 2", "response": "3"}\n'
FILES = {
    "good.jsonl": GOOD * 40,
    "empty.jsonl": "",
    "bad_json.jsonl": GOOD + '{"prompt": "x",\n',
    "list_row.jsonl": '["prompt", "response"]\n',
    "no_prompt.jsonl": '{"response": "3"}\n',
    "int_prompt.jsonl": '{"prompt": 3, "response": "3"}\n',
    "int_response.jsonl": '{"prompt": "add", "response": 3}\n',
    "bad.yaml": "method: [kd\n",
    "list.yaml": "- method\n- kd\n",
    "typo.yaml": "method: kd\noptim: {lrr: 1.0e-3}\n",
    "a_file": "not a directory\n",
    "samples.jsonl": '{"task_id": "HumanEval/0"}\n',
}
BYTES = {"latin1.jsonl": '{"prompt": "caf\xe9", "response": "x"}\n'.encode("latin-1")}

TRAIN = ["train", "data.train_file=good.jsonl", "teacher.name=tiny-llama", "student.name=tiny-llama",
         "output_dir=out"]  # fmt: skip
CASES = [
    # ---- train: config
    ("train-typo", [*TRAIN, "optim.lrr=1e-3"], ["optim.lrr", "did you mean 'lr'"]),
    ("train-unknown-section", [*TRAIN, "optimizer.lr=1e-3"], ["optimizer"]),
    ("train-unknown-method", [*TRAIN, "method=kdd"], ["kdd"]),
    ("train-negative-lr", [*TRAIN, "optim.lr=-1"], ["optim.lr"]),
    ("train-zero-batch", [*TRAIN, "optim.batch_size=0"], ["batch_size"]),
    ("train-not-a-number", [*TRAIN, "optim.lr=fast"], ["optim.lr", "fast"]),
    ("train-loss-kwarg-range", [*TRAIN, "method=distillm", "loss_kwargs={alpha: 2.0}"], ["alpha"]),
    ("train-loss-kwarg-unknown", [*TRAIN, "loss_kwargs={alpah: 0.1}"], ["alpah"]),
    ("train-bad-choice", [*TRAIN, "mixed_precision=fp8"], ["mixed_precision", "fp8"]),
    ("train-yaml-missing", ["train", "nope.yaml"], ["nope.yaml"]),
    ("train-yaml-malformed", ["train", "bad.yaml"], ["bad.yaml"]),
    ("train-yaml-not-mapping", ["train", "list.yaml"], ["list.yaml"]),
    ("train-yaml-typo", ["train", "typo.yaml", "data.train_file=good.jsonl"], ["optim.lrr"]),
    # ---- train: data
    ("train-data-missing", [*TRAIN, "data.train_file=missing.jsonl"], ["missing.jsonl"]),
    ("train-data-empty", [*TRAIN, "data.train_file=empty.jsonl"], ["empty", "empty.jsonl"]),
    ("train-data-bad-json", [*TRAIN, "data.train_file=bad_json.jsonl"], ["bad_json.jsonl:2", "invalid JSON"]),
    ("train-data-not-object", [*TRAIN, "data.train_file=list_row.jsonl"], ["list_row.jsonl:1", "JSON object"]),
    ("train-data-no-prompt", [*TRAIN, "data.train_file=no_prompt.jsonl"], ["no_prompt.jsonl:1", "'prompt'"]),
    ("train-data-int-prompt", [*TRAIN, "data.train_file=int_prompt.jsonl"], ["int_prompt.jsonl:1", "'prompt'"]),
    ("train-data-int-response", [*TRAIN, "data.train_file=int_response.jsonl"], ["int_response.jsonl:1"]),
    ("train-data-not-utf8", [*TRAIN, "data.train_file=latin1.jsonl"], ["latin1.jsonl", "UTF-8"]),
    ("train-val-missing", [*TRAIN, "data.val_file=nope.jsonl"], ["validation data file not found", "nope.jsonl"]),
    ("train-distillm-no-val", [*TRAIN, "method=distillm", "data.val_fraction=0"], ["'distillm'", "validation"]),
    ("train-unknown-teacher", [*TRAIN, "teacher.name=no-such-model"], ["no-such-model"]),
    ("train-resume-missing", [*TRAIN, "resume=ckpt/step-00000009"], ["resume checkpoint not found"]),
    ("train-output-is-a-file", [*TRAIN, "output_dir=a_file"], ["a_file"]),
    # ---- run / sweep: suites
    ("run-unknown-suite", ["run", "no-such-suite", "--plan"], ["no-such-suite"]),
    ("run-typo", ["run", "world", "trian.lr=1e-3", "--plan"], ["trian"]),
    ("run-unknown-method", ["run", "world", "methods=[kdd]", "--plan"], ["kdd"]),
    (
        "run-unknown-task",
        ["run", "world", "eval.tasks={nope: 2}", "eval.not_averaged=[]", "eval.curve_tasks={}", "--plan"],
        ["nope"],
    ),
    ("run-unknown-pool", ["run", "world", "prompts.pools=[nope]", "--plan"], ["nope"]),
    ("run-train-override-typo", ["run", "world", "train.overrides=[optim.lrr=1e-3]", "--plan"], ["optim.lrr"]),
    (
        "run-method-override-typo",
        ["run", "world", "train.method_overrides={kd: [distillm.phi_inti=0.2]}", "--plan"],
        ["distillm.phi_inti"],
    ),  # fmt: skip
    ("run-method-override-method", ["run", "world", "train.method_overrides={kdd: [optim.lr=1]}", "--plan"], ["kdd"]),
    (
        "run-teacher-override-typo",
        ["run", "world", "teacher_train.overrides=[data.max_lne=9]", "--plan"],
        ["data.max_lne"],
    ),  # fmt: skip
    ("run-force-unknown", ["run", "world", "--plan", "--force", "nope"], ["--force 'nope'"]),
    ("run-until-unknown", ["run", "world", "--until", "nope", "output_root=results"], ["--until 'nope'"]),
    ("run-negative-budget", ["run", "world", "train.token_budget=-5", "--plan"], ["token_budget"]),
    ("run-output-root-is-a-file", ["run", "world", "output_root=a_file", "--plan"], ["output_root=a_file is a file"]),
    ("sweep-duplicate-rates", ["sweep", "world", "--lr", "1e-3,1e-3"], ["duplicate"]),
    ("sweep-negative-rate", ["sweep", "world", "--lr=-1e-3"], ["> 0"]),
    (
        "sweep-task-without-val",
        ["sweep", "world", "--lr", "1e-3", "eval.tasks={arith: 2}", "eval.not_averaged=[]", "eval.curve_tasks={}"],
        ["val split", "arith"],
    ),  # fmt: skip
    # ---- eval, score, leaderboard, gc
    ("eval-unknown-task", ["eval", "--model", "tiny-llama", "--tasks", "nope", "output_dir=ev"], ["nope"]),
    ("eval-no-model", ["eval", "--tasks", "arith", "output_dir=ev"], ["--model"]),
    ("eval-zero-limit", ["eval", "--model", "tiny-llama", "--tasks", "arith", "limit=0", "output_dir=ev"], ["limit"]),
    (
        "eval-bad-split",
        ["eval", "--model", "tiny-llama", "--tasks", "arith", "split=train", "output_dir=ev"],
        ["split"],
    ),  # fmt: skip
    ("score-missing-samples", ["score", "humaneval", "--samples", "missing.jsonl"], ["missing.jsonl"]),
    ("score-bad-samples", ["score", "humaneval", "--samples", "samples.jsonl"], ["samples.jsonl"]),
    ("leaderboard-no-records", ["leaderboard", "nothing"], ["nothing"]),
    (
        "eval-output-is-a-file",
        ["eval", "--model", "tiny-llama", "--tasks", "arith", "limit=1", "output_dir=a_file"],
        ["a_file"],
    ),  # fmt: skip
    ("gc-missing-root", ["gc", "--root", "nope"], ["nope"]),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    for name, data in BYTES.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_catalogue_has_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, argv, names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, argv, names, workdir, capsys):
    before = _tree(workdir)
    assert main(argv) == 2, name
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith(f"distillm-bench {argv[0]}: error: "), out.err
    assert "Traceback" not in out.err and all(n in out.err for n in names), out.err
    assert _tree(workdir) - before <= {"out", "ev"}, f"{name} left {_tree(workdir) - before}"
    assert not any((workdir / d).exists() and any((workdir / d).iterdir()) for d in ("out", "ev")), name


@pytest.mark.slow  # a real (one-example) evaluation through lm-eval
@pytest.mark.parametrize(
    "code, reason", [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")]
)
def test_disk_full_and_read_only_are_one_line_and_leave_no_half_written_file(code, reason, workdir, monkeypatch,
                                                                             capsys):  # fmt: skip
    """The OS refuses the write of a result (``os.replace`` of the atomic writer): one line naming the destination,
    and neither the destination nor a temp file stays behind."""
    import distill.atomic

    real = os.replace

    def refuse(src, dst, *a, **k):
        if str(dst).endswith("record.json"):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(distill.atomic.os, "replace", refuse)
    argv = ["eval", "--model", "tiny-llama", "--tasks", "arith", "limit=1", "output_dir=ev", "max_new_tokens=2"]
    assert main(argv) == 2
    full = capsys.readouterr().err
    err = full.rstrip("\n").split("\n")[-1]  # the one line after lm-eval's own progress bars
    assert err.startswith(f"distillm-bench eval: error: {reason}: ev/tiny-llama-") and ".tmp" not in err, err
    assert err.endswith("/record.json") and "Traceback" not in full, err
    leftovers = list((workdir / "ev").iterdir()) if (workdir / "ev").exists() else []
    assert leftovers == [], leftovers  # no run dir, no temp dir, no partial lm_eval_data
