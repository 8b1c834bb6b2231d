"""The run report: scores with intervals, plots and examples from evaluation folders and the trainer's log history."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, write_jsonl

from sumtune.config import ConfigError
from sumtune.report import parse_pairs, pick_examples, plot_training, write_report

PNG = b"\x89PNG\r\n\x1a\n"
REFERENCES = ["The council approved a new cycle path.", "A cat was rescued from a tree.",
              "A bakery won a bread award.", "Heavy rain flooded roads in Kelby."]


def make_eval(folder, predictions, mode="model", **extra):
    rows = [{"id": f"r{i}", "prediction": p, "reference": r} for i, (p, r) in enumerate(zip(predictions, REFERENCES,
                                                                                        strict=True))]
    write_jsonl(folder / "predictions.jsonl", rows)
    metrics = {"rouge1": 40.0, "rouge2": 20.0, "rougeL": 35.0, "rougeLsum": 35.0, "num_rows": len(rows),
               "ci95": {"rouge1": [30.0, 50.0], "rouge2": [10.0, 30.0], "rougeL": [25.0, 45.0],
                        "rougeLsum": [25.0, 45.0]}, "mode": mode, **extra}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "adapter").mkdir(parents=True)
    history = [{"loss": 3.0, "step": 1}, {"loss": 2.5, "step": 2}, {"eval_loss": 2.7, "step": 2},
               {"eval_rouge1": 12.0, "eval_rouge2": 3.0, "eval_rougeL": 10.0, "step": 2},
               {"loss": 2.0, "step": 3}, {"train_runtime": 30.0, "step": 3}]
    (run_dir / "adapter" / "log_history.json").write_text(json.dumps(history))
    predictions = ["The council approved a new cycle path.",  # exact: the best
                   "A cat was rescued.", "A bakery won.",
                   "Zebras dance."]  # the worst
    evals = [make_eval(tmp_path / "eval" / "finetuned", predictions, model=str(run_dir / "merged")),
             make_eval(tmp_path / "eval" / "lead", [r.split(" ", 3)[-1] for r in REFERENCES], mode="lead")]
    return run_dir, [f"finetuned={evals[0]}", f"lead={evals[1]}"]


def test_report_shows_scores_with_intervals_plots_and_examples(run):
    run_dir, pairs = run
    report = write_report(run_dir, parse_pairs(pairs))
    assert report == run_dir / "report" / "report.md" and not (run_dir / "report.tmp").exists()
    text = report.read_text()
    assert "| finetuned | 40.00 [30.00, 50.00] | 20.00 [10.00, 30.00] | 35.00 [25.00, 45.00] | 4 |" in text
    assert "| lead |" in text
    for name in ("training.png", "scores.png", "lengths.png"):
        assert f"]({name})" in text
        assert (run_dir / "report" / name).read_bytes()[:8] == PNG, name
    assert "| final validation loss | 2.7000 (step 2) |" in text
    best, median, worst = (text.index(f"### {label}") for label in ("Best", "Median", "Worst"))
    assert best < median < worst
    assert "> The council approved a new cycle path." in text[best:median]  # the exact prediction
    assert "> Zebras dance." in text[worst:]


def test_report_replaces_an_older_report(run):
    run_dir, pairs = run
    (run_dir / "report").mkdir()
    (run_dir / "report" / "stale.png").write_bytes(PNG)
    write_report(run_dir, parse_pairs(pairs))
    assert not (run_dir / "report" / "stale.png").exists()


def test_examples_are_best_median_and_worst_by_rouge_l():
    rows = [{"prediction": p, "reference": "a cat was rescued from a tree"} for p in
            ("a dog", "a cat was rescued from a tree", "a cat was rescued", "nothing")]
    picks = pick_examples(rows)
    assert [label for label, *_ in picks] == ["Best", "Median", "Worst"]
    assert [row["prediction"] for _, row, _ in picks] == ["a cat was rescued from a tree", "a dog", "nothing"]
    assert picks[0][2] == pytest.approx(100.0) and picks[2][2] == 0.0


def test_no_training_log_means_no_training_plot(tmp_path):
    assert plot_training([], tmp_path / "training.png") is False
    assert not (tmp_path / "training.png").exists()


def test_bad_evaluation_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="NAME=EVAL_DIR"):
        parse_pairs([str(tmp_path)])
    with pytest.raises(ConfigError, match="run that evaluation first"):
        parse_pairs([f"base={tmp_path / 'missing'}"])
    folder = make_eval(tmp_path / "a", REFERENCES)
    with pytest.raises(ConfigError, match="twice"):
        parse_pairs([f"a={folder}", f"a={folder}"])


@pytest.mark.slow
def test_report_script_help_and_bad_input():
    helped = subprocess.run([sys.executable, "report.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert helped.returncode == 0 and "NAME=EVAL_DIR" in helped.stdout
    bad = subprocess.run([sys.executable, "report.py", "--run_dir", "outputs", "finetuned"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in bad.stderr
