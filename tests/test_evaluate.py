"""evaluate.py's three modes: a model, an existing predictions file, and the lead-1 baseline."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ARTICLES, ROOT, make_rows, write_jsonl
from rouge_score import rouge_scorer

from sumtune import evaluation
from sumtune.config import ConfigError, parse_args
from sumtune.evaluation import evaluate, format_table, lead_sentence
from sumtune.metrics import ROUGE_TYPES


def run_eval(*argv):
    return evaluate(*parse_args(["--bootstrap_samples", "50", *argv]))


def test_lead_sentence_is_first_nonempty_line():
    assert lead_sentence("\n  First line.  \nSecond line.") == "First line."
    assert lead_sentence("") == ""


def test_predictions_file_matches_rouge_score(tmp_path):
    rows = [{"id": str(i), "prediction": ARTICLES[i % 4][1], "reference": ARTICLES[(i + i // 4) % 4][1]}
            for i in range(12)]
    path = write_jsonl(tmp_path / "preds.jsonl", rows)
    metrics = run_eval("--predictions_file", str(path), "--output_dir", str(tmp_path / "out"))
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    for key in ROUGE_TYPES:
        expected = np.mean([scorer.score(r["reference"], r["prediction"])[key].fmeasure * 100 for r in rows])
        assert metrics[key] == round(expected, 2)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == metrics and saved["num_rows"] == 12
    # Scores and interval bounds are saved alike, to 2 decimals.
    for value in [saved[key] for key in ROUGE_TYPES] + [v for key in ROUGE_TYPES for v in saved["ci95"][key]]:
        assert value == round(value, 2)
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [r["id"] for r in rows]


def test_lead_baseline_on_raw_file(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", make_rows(4))
    metrics = run_eval("--baseline", "lead", "--dataset_name", str(path), "--output_dir", str(tmp_path / "lead"))
    predictions = [json.loads(line) for line in (tmp_path / "lead" / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in predictions] == [a.splitlines()[0] for a, _ in ARTICLES]
    assert 0 < metrics["rouge1"] < 100 and metrics["mode"] == "lead"


def test_model_mode_generates_every_row(tiny_model_dir, data_dir, tmp_path, in_repo):
    metrics = run_eval("--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(tiny_model_dir),
                       "--load_in_4bit", "false", "--dataset_name", str(data_dir), "--max_new_tokens", "8",
                       "--generation_batch_size", "3", "--output_dir", str(tmp_path / "model"))
    rows = [json.loads(line) for line in (tmp_path / "model" / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(4)]
    assert all(isinstance(r["prediction"], str) for r in rows) and metrics["num_rows"] == 4
    assert metrics["mode"] == "model" and metrics["max_new_tokens"] == 8


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT.parent / "shared/data/xsum_test_sample_500.jsonl").is_file(), reason="no shared data")
def test_lead_baseline_on_real_xsum_rows(tmp_path):
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--baseline", "lead", "--dataset_name",
         str(ROOT.parent / "shared/data/xsum_test_sample_500.jsonl"), "--output_dir", str(tmp_path / "lead")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "lead" / "metrics.json").read_text())
    assert metrics["num_rows"] == 500 and 5 < metrics["rouge1"] < 40


def test_model_mode_with_a_dequantized_4bit_base(tiny_model_dir, data_dir, tmp_path, in_repo, caplog):
    with caplog.at_level("INFO", logger="sumtune.inferring"):
        metrics = run_eval("--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(tiny_model_dir),
                           "--load_in_4bit", "true", "--dequantize_4bit_base", "true", "--dataset_name",
                           str(data_dir), "--max_new_tokens", "8", "--output_dir", str(tmp_path / "model"))
    assert "Dequantized 12 4-bit layers for generation" in caplog.text  # 2 layers x 6 projections
    assert metrics["num_rows"] == 4 and metrics["mode"] == "model"


def test_model_mode_with_the_adapter_merged_in_memory(tiny_model_dir, tiny_tokenizer, data_dir, tmp_path, in_repo,
                                                      caplog):
    """--merge_adapter true: the adapter is added to the base weights before generating; the predictions equal the
    unmerged adapter's (fp32), and the manifest's settings say which it was."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                                      target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]))
    model.save_pretrained(tmp_path / "adapter")
    tiny_tokenizer.save_pretrained(tmp_path / "adapter")  # as train.py saves it
    predictions = {}
    run_eval("--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(tiny_model_dir), "--load_in_4bit",
             "false", "--dataset_name", str(data_dir), "--max_new_tokens", "8", "--output_dir", str(tmp_path / "base"))
    base = [json.loads(line)["prediction"]
            for line in (tmp_path / "base" / "predictions.jsonl").read_text().splitlines()]
    for merge in ("false", "true"):
        with caplog.at_level("INFO", logger="sumtune.inferring"):
            run_eval("--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(tiny_model_dir),
                     "--adapter_path", str(tmp_path / "adapter"), "--merge_adapter", merge, "--load_in_4bit", "false",
                     "--dataset_name", str(data_dir), "--max_new_tokens", "8", "--output_dir", str(tmp_path / merge))
        lines = (tmp_path / merge / "predictions.jsonl").read_text().splitlines()
        predictions[merge] = [json.loads(line)["prediction"] for line in lines]
        manifest = json.loads((tmp_path / merge / "manifest.json").read_text())
        assert '"merge_adapter": ' + merge in json.dumps(manifest)
        assert '"merge_adapter": ' + {"true": "false", "false": "true"}[merge] not in json.dumps(manifest)
    assert "Merged the adapter into the base weights in memory" in caplog.text
    assert predictions["true"] == predictions["false"] and len(predictions["true"]) == 4
    assert predictions["true"] != base  # the adapter changes the summaries: equality above means something


def model_argv(model_dir, data_dir, out, *extra):
    return ["--config", "recipes/tiny/demo.yaml", "--model_name_or_path", str(model_dir), "--load_in_4bit", "false",
            "--dataset_name", str(data_dir), "--max_new_tokens", "8", "--output_dir", str(out), *extra]


def test_finished_evaluation_is_reused_and_overwrite_makes_it_again(tiny_model_dir, data_dir, tmp_path, in_repo,
                                                                    monkeypatch, caplog):
    out = tmp_path / "model"
    first = run_eval(*model_argv(tiny_model_dir, data_dir, out))
    written = (out / "metrics.json").stat().st_mtime_ns
    load = evaluation.load_generation_model
    monkeypatch.setattr(evaluation, "load_generation_model", lambda *a, **k: pytest.fail("generated again"))
    with caplog.at_level("INFO", logger="sumtune"):
        assert run_eval(*model_argv(tiny_model_dir, data_dir, out)) == first
    assert "already holds an evaluation made with these settings: reusing it" in caplog.text
    assert (out / "metrics.json").stat().st_mtime_ns == written  # read, not rewritten
    # Other scoring settings rescore the same predictions without generating.
    rescored = run_eval(*model_argv(tiny_model_dir, data_dir, out), "--bootstrap_samples", "20")
    assert rescored["rouge1"] == first["rouge1"]
    assert json.loads((out / "manifest.json").read_text())["scoring"]["bootstrap_samples"] == 20
    with pytest.raises(ConfigError, match=r"holds an evaluation made with other settings \(max_new_tokens: 8 -> 4\)"
                                          ".*--overwrite_output_dir true"):
        run_eval(*model_argv(tiny_model_dir, data_dir, out, "--max_new_tokens", "4"))
    calls = []
    monkeypatch.setattr(evaluation, "load_generation_model", lambda *a, **k: calls.append(1) or load(*a, **k))
    remade = run_eval(*model_argv(tiny_model_dir, data_dir, out, "--max_new_tokens", "4",
                                  "--overwrite_output_dir", "true"))
    assert calls and remade["max_new_tokens"] == 4
    calls.clear()
    run_eval(*model_argv(tiny_model_dir, data_dir, out, "--max_new_tokens", "4", "--overwrite_output_dir", "true"))
    assert calls, "--overwrite_output_dir true generates again even with the same settings"


def test_generation_shows_a_progress_bar_on_a_terminal(tiny_model_dir, data_dir, tmp_path, in_repo, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    run_eval(*model_argv(tiny_model_dir, data_dir, tmp_path / "tty"))
    assert "Generating: 100%" in stderr.getvalue() and "4/4" in stderr.getvalue()
    assert "summaries/s" in stderr.getvalue()
    quiet = io.StringIO()  # not a terminal (a log file, a pipe): no bar
    monkeypatch.setattr(sys, "stderr", quiet)
    run_eval(*model_argv(tiny_model_dir, data_dir, tmp_path / "pipe"))
    assert "Generating" not in quiet.getvalue()


def test_table_shows_intervals_and_stays_aligned():
    metrics = {key: 41.5 for key in ROUGE_TYPES} | {"ci95": {key: [36.2, 47.1] for key in ROUGE_TYPES}}
    table = format_table({"predictions_file": metrics, "lead": {**metrics, "rouge1": 5.0}})
    lines = table.splitlines()
    assert "41.50 [36.20, 47.10]" in lines[1] and lines[2].split()[:2] == ["lead", "5.00"]
    assert len({len(line) for line in lines}) == 1  # every row as wide as the header
    for key in ROUGE_TYPES:  # each cell ends where its column's header does, whatever the row label's length
        end = lines[0].index(key) + len(key)
        assert all(line[end - 1] == "]" and line[end:end + 1] in ("", " ") for line in lines[1:]), key
    assert format_table({"x": {key: 1.0 for key in ROUGE_TYPES}}).splitlines()[1].split() == ["x"] + ["1.00"] * 4


def test_manifest_redacts_only_secrets(tmp_path, monkeypatch):
    rows = [{"id": str(i), "prediction": ARTICLES[i % 4][1], "reference": ARTICLES[i % 4][1]} for i in range(4)]
    path = write_jsonl(tmp_path / "preds.jsonl", rows)
    run_eval("--predictions_file", str(path), "--output_dir", str(tmp_path / "out"))
    training = json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["training"]
    assert training["include_num_input_tokens_seen"] == "no"
    assert training["eos_token"] is None and training["pad_token"] is None  # the recipe's (unset), not <redacted>
    assert training["hub_token"] in (None, "<redacted>")
    from sumtune.manifest import redact

    assert redact({"hub_token": "hf_x", "eos_token": "<|endoftext|>", "nested": {"password": "p", "api_key": "k"},
                   "note": "hf_" + "a" * 30, "max_new_tokens": 8}) == {
        "hub_token": "<redacted>", "eos_token": "<|endoftext|>", "nested": {"password": "<redacted>",
                                                                            "api_key": "<redacted>"},
        "note": "<redacted>", "max_new_tokens": 8}
