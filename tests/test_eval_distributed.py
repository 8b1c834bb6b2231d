"""Data-parallel evaluation on the CPU: two processes under `accelerate launch` write the same predictions file as one
process (every row once, in dataset order), and a run killed under two processes resumes under one, generating only
the rows no process finished."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_jsonl
from helpers_crash import jsonl, script_args

from sumtune.decoding import Decoding
from sumtune.generation import batch_cost, plan_batches
from sumtune.predictions import PARTIAL_FILE, deal_batches, partial_files, partial_path

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
ROWS = 12
# Greedy in float32 (the demo recipe's dtype) on the full-precision tiny model.
EVAL_ARGS = ["--load_in_4bit", "false", "--generation_batch_size", "2", "--max_new_tokens", "24",
             "--bootstrap_samples", "20"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_env() -> dict:
    # Two cores shared by every process: one thread each keeps the ranks from starving one another.
    return os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                         "PYTHONUNBUFFERED": "1"}


def test_whole_batches_are_dealt_once_each_with_balanced_cost():
    lengths = [100, 5, 80, 60, 7, 90, 30, 31, 1, 64, 12, 50]
    batches = plan_batches(lengths, max_new_tokens=10, batch_size=3, max_batch_tokens=250)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    costs = [batch_cost(lengths, b, 10) for b in batches]
    shares = deal_batches(costs, 2)
    assert sorted(k for share in shares for k in share) == list(range(len(batches)))  # every batch exactly once
    assert all(share == sorted(share) for share in shares)  # longest batches first, as one process runs them
    totals = [sum(costs[k] for k in share) for share in shares]
    assert max(totals) - min(totals) <= max(costs), (totals, costs)
    assert deal_batches(costs, 1) == [list(range(len(batches)))]
    assert deal_batches([5, 3], 4) == [[0], [1], [], []]  # more processes than batches: some generate nothing


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """The same evaluation by one process and by two CPU processes, run side by side."""
    base = tmp_path_factory.mktemp("eval-dp")
    data = base / "data"
    lines = (ROOT / "data/demo/test.jsonl").read_text().splitlines()[:ROWS]
    write_jsonl(data / "test.jsonl", [json.loads(line) for line in lines])
    args = script_args("evaluate.py", tiny_model_dir, "--dataset_name", data, *EVAL_ARGS)[1:]  # without python
    one = subprocess.Popen([sys.executable, *args, "--output_dir", str(base / "one")], cwd=ROOT, env=cpu_env(),
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # --use_cpu true: torchrun does not pass accelerate's use_cpu on (see the config's header).
    two = subprocess.Popen([ACCELERATE, "launch", "--config_file", "accelerate_configs/multi_cpu.yaml",
                            "--main_process_port", str(free_port()), *args, "--output_dir", str(base / "two"),
                            "--use_cpu", "true"], cwd=ROOT, env=cpu_env(), text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    logs = {}
    for name, proc in (("one", one), ("two", two)):
        logs[name] = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, f"{name} failed:\n{logs[name][-4000:]}"
    return {"data": data, "one": base / "one", "two": base / "two", "logs": logs}


@pytest.mark.slow
def test_two_processes_write_every_row_once_as_one_process_does(runs):
    ids = [json.loads(line)["id"] for line in (runs["data"] / "test.jsonl").read_text().splitlines()]
    one, two = jsonl(runs["one"] / "predictions.jsonl"), jsonl(runs["two"] / "predictions.jsonl")
    assert [r["id"] for r in two] == ids  # every row exactly once, in dataset order
    assert two == one
    assert any(r["prediction"] for r in two)
    assert json.loads((runs["two"] / "metrics.json").read_text()) == json.loads(
        (runs["one"] / "metrics.json").read_text())
    assert json.loads((runs["two"] / "manifest.json").read_text())["settings"] == json.loads(
        (runs["one"] / "manifest.json").read_text())["settings"]
    assert sorted(p.name for p in runs["two"].iterdir()) == ["manifest.json", "metrics.json", "predictions.jsonl"]
    timing = {name: json.loads((runs[name] / "manifest.json").read_text())["generation"] for name in ("one", "two")}
    assert [timing["one"]["rows"], timing["one"]["processes"]] == [ROWS, 1]
    assert [timing["two"]["rows"], timing["two"]["processes"]] == [ROWS, 2]
    assert timing["two"]["seconds"] > 0
    assert timing["two"]["summaries_per_s"] == pytest.approx(ROWS / timing["two"]["seconds"], rel=0.1)  # rounding
    log = runs["logs"]["two"]
    # 12 rows in batches of 2: each process runs 3 of the 6 batches one process makes
    assert "Process 0 of 2: generating 6 rows in 3 batches" in log
    assert "Process 1 of 2: generating 6 rows in 3 batches" in log
    assert log.count("metrics written to") == 1  # only the main process reports


@pytest.mark.slow
def test_run_killed_under_two_processes_resumes_under_one(runs, tiny_model_dir, tmp_path, monkeypatch, in_repo):
    from sumtune import evaluation
    from sumtune.config import parse_args

    reference = jsonl(runs["two"] / "predictions.jsonl")
    run_key = json.loads((runs["two"] / "manifest.json").read_text())["settings"]
    out = tmp_path / "killed"
    out.mkdir()
    # What two killed processes leave: each its share's first rows, rank 1 with a last line cut short.
    header = json.dumps({"run_key": run_key}) + "\n"
    seeded = {}
    shares = [[0, 4, 7], [2, 9]]
    for rank, share in enumerate(shares):
        lines = [header]
        for index in share:
            seeded[index] = f"seeded {index}"  # kept as is: a regenerated row would read differently
            lines.append(json.dumps({"index": index, "id": reference[index]["id"], "prediction": seeded[index]}) + "\n")
        partial_path(out, rank).write_text("".join(lines))
    with partial_path(out, 1).open("a") as handle:
        handle.write('{"index": 11, "id": "demo-te')
    assert [p.name for p in partial_files(out)] == [PARTIAL_FILE, "predictions.partial.rank1.jsonl"]

    generated = []
    real = Decoding.iter_summaries

    def counting(self, model, tokenizer, prompts, *args, **kwargs):
        generated.append(len(prompts))
        yield from real(self, model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(Decoding, "iter_summaries", counting)
    argv = ["--config", "recipes/tiny/demo.yaml", "--max_length", "256", "--report_to", "none", "--model_name_or_path",
            str(tiny_model_dir), "--dataset_name", str(runs["data"]), *EVAL_ARGS, "--output_dir", str(out)]
    metrics = evaluation.evaluate(*parse_args(argv))
    assert generated == [ROWS - len(seeded)]
    rows = jsonl(out / "predictions.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in reference]
    for index, (row, expected) in enumerate(zip(rows, reference, strict=True)):
        assert row["prediction"] == seeded.get(index, expected["prediction"]), index
    assert metrics["num_rows"] == ROWS and not partial_files(out)


def test_processes_that_did_not_join_one_group_are_refused(tmp_path, monkeypatch, in_repo):
    from sumtune.config import ConfigError, parse_args
    from sumtune.evaluation import process_state

    _, _, training_args, _ = parse_args(["--config", "recipes/tiny/demo.yaml", "--output_dir", str(tmp_path)])
    monkeypatch.setenv("WORLD_SIZE", "2")  # launched as 2, but this process is alone in its (absent) group
    with pytest.raises(ConfigError, match="--use_cpu true"):
        process_state(training_args)
