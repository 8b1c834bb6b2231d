"""SIGKILL the real scripts mid-run and run them again: training and evaluation lose no finished work and end with
the same result as an uninterrupted run."""

import json
import random
import shutil
import signal
import time

import pytest
import torch
from helpers_crash import checkpoint_steps, jsonl, load_adapter, make_data, run_script, start_script, wait_for

from sumtune import inferring
from sumtune.predictions import PARTIAL_FILE, load_partial
from sumtune.training import last_complete_checkpoint

# 40 rows / batch 4 = 10 steps an epoch, 2 epochs; lora_dropout > 0 so the restored RNG state matters.
TRAIN_ARGS = ["--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "2",
              "--lora_dropout", "0.1", "--learning_rate", "1e-2", "--warmup_steps", "2"]


def loss_curve(adapter_dir):
    history = json.loads((adapter_dir / "log_history.json").read_text())
    return [(e["step"], e["loss"], e["learning_rate"], e["grad_norm"]) for e in history if "loss" in e]


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_adapter(tiny_model_dir, tmp_path):
    data = make_data(tmp_path / "data", train=40)
    reference = run_script("train.py", tiny_model_dir, "--dataset_name", data, "--output_dir", tmp_path / "ref",
                           *TRAIN_ARGS)
    assert reference.returncode == 0, reference.stderr[-3000:]

    out, log = tmp_path / "killed", tmp_path / "killed.log"
    rng = random.Random(5)
    kills = 0
    for attempt in range(3):
        target = max(checkpoint_steps(out), default=0) + 2 * rng.randint(1, 2)
        proc = start_script("train.py", tiny_model_dir, "--dataset_name", data, "--output_dir", out, *TRAIN_ARGS,
                            log=log)
        reached = wait_for(lambda t=target: max(checkpoint_steps(out), default=0) >= t, proc)
        if reached:
            # land anywhere: in the next step, in the middle of writing a checkpoint, or in the log
            time.sleep(rng.uniform(0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if (out / "adapter").exists() and proc.returncode != 0:
            # the kill landed while the run exited, after it had published its adapter (a rename of a complete
            # folder); it is removed so that the final run below still resumes from the last checkpoint
            assert (out / "adapter" / "manifest.json").is_file() and not list(out.glob("adapter*.tmp")), attempt
            shutil.rmtree(out / "adapter")
    assert kills >= 2, f"only {kills} kills landed: the run is too fast for the test"
    final = run_script("train.py", tiny_model_dir, "--dataset_name", data, "--output_dir", out, *TRAIN_ARGS)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Resuming from" in final.stderr

    expected, got = load_adapter(tmp_path / "ref" / "adapter"), load_adapter(out / "adapter")
    assert expected.keys() == got.keys()
    diff = max((expected[k].float() - got[k].float()).abs().max().item() for k in expected)
    assert diff <= 1e-6, f"resumed adapter differs by {diff}"
    ref_curve, got_curve = loss_curve(tmp_path / "ref" / "adapter"), loss_curve(out / "adapter")
    assert [s for s, *_ in got_curve] == list(range(1, 21))
    assert len(got_curve) == len(ref_curve)
    for got_entry, ref_entry in zip(got_curve, ref_curve, strict=True):
        assert got_entry == pytest.approx(ref_entry, abs=1e-6), (got_entry, ref_entry)
    manifest = json.loads((out / "adapter" / "manifest.json").read_text())
    assert manifest["resumed_from"] and manifest["dataset_fingerprint"] and manifest["prompt_hash"]


@pytest.mark.slow
def test_finished_training_is_reused_not_redone(tiny_model_dir, tmp_path):
    data = make_data(tmp_path / "data")
    args = ["--dataset_name", data, "--output_dir", tmp_path / "run", "--max_steps", "2", "--save_strategy", "no"]
    assert run_script("train.py", tiny_model_dir, *args).returncode == 0
    again = run_script("train.py", tiny_model_dir, *args)
    assert again.returncode == 0 and "reusing it" in again.stderr and "Global batch" not in again.stderr
    changed = run_script("train.py", tiny_model_dir, *args, "--learning_rate", "1e-3")
    assert changed.returncode == 2 and "learning_rate" in changed.stderr
    assert "--overwrite_output_dir true" in changed.stderr


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (out / "run_config.json").write_text(json.dumps({"data": {}, "model": {}, "training": {"learning_rate": 0.5}}))
    result = run_script("train.py", tiny_model_dir, "--dataset_name", make_data(tmp_path / "data"),
                        "--output_dir", out)
    assert result.returncode == 2 and "learning_rate" in result.stderr and "new --output_dir" in result.stderr


def test_half_written_checkpoint_is_skipped(tmp_path):
    for step, state in ((2, {"global_step": 2}), (4, None), (6, "{\"global_st")):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


EVAL_ARGS = ["--load_in_4bit", "false", "--generation_batch_size", "2", "--max_new_tokens", "48",
             "--bootstrap_samples", "20"]


@pytest.mark.slow
def test_killed_evaluation_generates_only_missing_rows(tiny_model_dir, tmp_path):
    data = make_data(tmp_path / "data", test=24)
    reference = run_script("evaluate.py", tiny_model_dir, "--dataset_name", data, "--output_dir", tmp_path / "ref",
                           *EVAL_ARGS)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out, log = tmp_path / "killed", tmp_path / "killed.log"
    partial = out / PARTIAL_FILE
    made = []
    for target in (4, 12):
        proc = start_script("evaluate.py", tiny_model_dir, "--dataset_name", data, "--output_dir", out,
                            *EVAL_ARGS, log=log)
        wait_for(lambda t=target: partial.is_file() and partial.read_text().count("\n") > t, proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "metrics.json").exists() and not (out / "predictions.jsonl").exists()
        made.append(partial.read_text().count("\n") - 1)
    assert 0 < made[0] < made[1] < 24, made
    with partial.open("a") as handle:
        handle.write('{"index": 3, "id": "te')  # a line cut short by the kill
    final = run_script("evaluate.py", tiny_model_dir, "--dataset_name", data, "--output_dir", out, *EVAL_ARGS)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"{made[1]} of 24 predictions already made; generating {24 - made[1]}" in final.stderr
    rows, expected = jsonl(out / "predictions.jsonl"), jsonl(tmp_path / "ref" / "predictions.jsonl")
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(24)]
    assert rows == expected
    assert not partial.exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads((tmp_path / "ref" / "metrics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset_fingerprint"] and manifest["prompt_hash"] and manifest["git_commit"] is not None


def test_partial_file_from_other_settings_is_not_mixed_in(tmp_path):
    path = tmp_path / PARTIAL_FILE
    path.write_text(json.dumps({"run_key": {"max_new_tokens": 8}}) + "\n"
                    + json.dumps({"index": 0, "id": "a", "prediction": "x"}) + "\n")
    assert load_partial(path, {"max_new_tokens": 8}, ["a", "b"], overwrite=False) == {0: "x"}
    with pytest.raises(Exception, match="other settings"):
        load_partial(path, {"max_new_tokens": 16}, ["a", "b"], overwrite=False)
    assert load_partial(path, {"max_new_tokens": 16}, ["a", "b"], overwrite=True) == {} and not path.exists()


def test_rerun_of_finished_evaluation_generates_nothing(tiny_model_dir, tmp_path, monkeypatch, in_repo):
    from sumtune import evaluation
    from sumtune.config import parse_args

    data = make_data(tmp_path / "data", test=4)
    argv = ["--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(tiny_model_dir), "--load_in_4bit",
            "false", "--dataset_name", str(data), "--max_new_tokens", "4", "--bootstrap_samples", "10",
            "--output_dir", str(tmp_path / "eval")]
    first = evaluation.evaluate(*parse_args(argv))
    monkeypatch.setattr(inferring, "load_model", lambda *a, **k: pytest.fail("the model was loaded again"))
    assert evaluation.evaluate(*parse_args(argv)) == first
    with pytest.raises(Exception, match="other settings"):
        evaluation.evaluate(*parse_args([*argv, "--max_new_tokens", "5"]))
    assert torch.isfinite(torch.tensor(first["rouge1"]))
