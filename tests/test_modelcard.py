"""Model cards on a tiny real run: train.py and merge.py write hub-style cards, the report step adds the ROUGE
model-index once evaluations exist, and huggingface_hub reads them back."""

import json

import pytest
from conftest import ROOT, make_rows, write_jsonl
from huggingface_hub import ModelCard

from sumtune.config import parse_args
from sumtune.evaluation import evaluate
from sumtune.merge import merge_adapter
from sumtune.modelcard import SCORES, evaluation_of, hub_id, read_evaluation
from sumtune.report import parse_pairs, write_report
from sumtune.training import train


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """Train 2 steps, merge, score the merged model and lead-1 on 4 test rows, write the report."""
    root = tmp_path_factory.mktemp("card")
    for split, n in (("train", 16), ("validation", 4), ("test", 4)):
        write_jsonl(root / "data" / f"{split}.jsonl", make_rows(n, split))
    run_dir = root / "run"
    common = ["--config", str(ROOT / "recipes/tiny/demo.yaml"), "--model_name_or_path", str(tiny_model_dir),
              "--max_length", "256", "--report_to", "none", "--max_new_tokens", "8"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        data_args, eval_args, training_args, model_args = parse_args([
            *common, "--dataset_name", str(root / "data"), "--output_dir", str(run_dir), "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--logging_steps", "1", "--eval_strategy", "steps",
            "--eval_steps", "2", "--save_strategy", "no"])
        adapter = train(data_args, training_args, model_args, eval_args)
        adapter_card = (adapter / "README.md").read_text()
        merged = merge_adapter(model_args, str(adapter), run_dir / "merged",
                               chat_template_path=training_args.chat_template_path)
        merged_card = (merged / "README.md").read_text()
        evals = {"finetuned": ["--model_name_or_path", str(merged), "--load_in_4bit", "false"],
                 "lead": ["--baseline", "lead"]}
        for name, flags in evals.items():
            evaluate(*parse_args([*common, "--dataset_name", str(run_dir / "data"), "--output_dir",
                                  str(root / "eval" / name), *flags]))
        report = write_report(run_dir, parse_pairs([f"{name}={root / 'eval' / name}" for name in evals]))
    return {"run": run_dir, "adapter": adapter, "merged": merged, "eval": root / "eval", "report": report,
            "adapter_card": adapter_card, "merged_card": merged_card}


def test_training_writes_an_adapter_card_and_no_boilerplate(tiny_run):
    card = ModelCard(tiny_run["adapter_card"])
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert "summarization" in card.data.tags and card.data.eval_results is None
    assert "[More Information Needed]" not in card.text
    assert "Summarize the following news article in one sentence." in card.text  # the prompt
    assert "| final train loss |" in card.text and "| final validation loss |" in card.text
    assert "| `lora_r` | `16` |" in card.text
    assert f"--adapter_path {tiny_run['adapter']}" in card.text  # the published path, not adapter.tmp
    assert not (tiny_run["run"] / "README.md").exists(), "TRL's boilerplate card was left in output_dir"


def test_merge_writes_a_transformers_card(tiny_run):
    card = ModelCard(tiny_run["merged_card"])
    assert card.data.library_name == "transformers" and card.data.eval_results is None
    assert f"--model_name_or_path {tiny_run['merged']} --load_in_4bit false" in card.text


@pytest.mark.parametrize("folder", ["adapter", "merged"])
def test_report_puts_rouge_into_both_cards(tiny_run, folder):
    metrics = json.loads((tiny_run["eval"] / "finetuned" / "metrics.json").read_text())
    card = ModelCard.load(tiny_run[folder] / "README.md")
    results = {r.metric_config: r for r in card.data.eval_results}
    assert set(results) == set(SCORES)
    for key, result in results.items():
        assert result.metric_type == "rouge" and result.dataset_split == "test"
        assert result.metric_value == pytest.approx(metrics[key], abs=0.005)
    assert "| lead |" in card.text and "| finetuned |" in card.text  # the comparison table
    assert card.data.library_name == ("peft" if folder == "adapter" else "transformers")


def test_report_of_the_tiny_run_embeds_its_plots(tiny_run):
    text = tiny_run["report"].read_text()
    for name in ("training.png", "scores.png", "lengths.png"):
        assert (tiny_run["report"].parent / name).is_file() and f"({name})" in text
    assert "**Article** (start):" in text  # articles found through the prepared test split


def test_the_model_evaluation_is_matched_to_its_own_folder(tiny_run):
    evaluations = [read_evaluation(name, tiny_run["eval"] / name) for name in ("lead", "finetuned")]
    assert evaluation_of(tiny_run["merged"], evaluations).name == "finetuned"
    assert evaluation_of(tiny_run["adapter"], evaluations).name == "finetuned"  # through the merged manifest
    assert evaluation_of(tiny_run["run"], evaluations) is None


def test_only_hub_ids_become_hub_metadata(tmp_path):
    assert hub_id("microsoft/phi-2") == "microsoft/phi-2"
    assert hub_id(str(tmp_path)) is None and hub_id("outputs/demo/base-model") is None and hub_id(None) is None
