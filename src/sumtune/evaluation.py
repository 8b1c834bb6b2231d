"""Predictions and ROUGE for a model, an existing predictions file, or the lead-1 baseline."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from trl import ModelConfig, SFTConfig

from .config import ConfigError, DataArguments, EvalArguments
from .data import fit_to_budget, is_prepared, load_prepared, load_raw_split, standardize, subsample
from .generation import generate_summaries
from .manifest import write_manifest
from .metrics import ROUGE_TYPES, compute_rouge
from .modeling import load_model, load_tokenizer
from .prompts import read_text

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"


def read_predictions(path: str | Path) -> list[dict]:
    """Rows of a JSONL file with non-null `prediction` and `reference` strings (an `id` is optional)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Predictions file not found: {path}.")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{number} is not valid JSON ({err.msg}).") from None
            missing = [k for k in ("prediction", "reference") if not isinstance(row.get(k), str)]
            if missing:
                raise ConfigError(f"{path}:{number} has no string field {', '.join(missing)}: every line needs "
                                  "`prediction` and `reference`.")
            rows.append({"id": str(row.get("id", number)), "prediction": row["prediction"],
                         "reference": row["reference"]})
    if not rows:
        raise ConfigError(f"{path} holds no predictions.")
    return rows


def load_eval_rows(data_args: DataArguments, eval_args: EvalArguments, seed: int):
    """The split to score: from a prepared folder (already fitted to the budget) or raw data (fitted later)."""
    if is_prepared(data_args.dataset_name):
        dataset = load_prepared(data_args.dataset_name)
        if eval_args.eval_split not in dataset:
            raise ConfigError(f"Prepared data has splits {list(dataset)}, not '{eval_args.eval_split}'.")
        return dataset[eval_args.eval_split], True
    ds, counts = standardize(load_raw_split(data_args, eval_args.eval_split), data_args, eval_args.eval_split)
    if counts["dropped_empty"]:
        logger.warning("Dropped %d rows with an empty article or summary.", counts["dropped_empty"])
    if len(ds) == 0:
        raise ConfigError(f"Split '{eval_args.eval_split}' has no row with both an article and a summary.")
    return subsample(ds, data_args.max_test_samples, seed), False


def lead_sentence(article: str) -> str:
    """XSum articles put one sentence per line: lead-1 is the first non-empty line."""
    return next((line.strip() for line in article.splitlines() if line.strip()), "")


def generate_for(rows, prepared: bool, data_args: DataArguments, eval_args: EvalArguments,
                 training_args: SFTConfig, model_args: ModelConfig) -> list[str]:
    if eval_args.adapter_path:
        tokenizer = load_tokenizer(eval_args.adapter_path, training_args.chat_template_path, padding_side="left")
    else:
        tokenizer = load_tokenizer(model_args.model_name_or_path, training_args.chat_template_path,
                                   padding_side="left", revision=model_args.model_revision)
    if prepared:
        prompts = rows["prompt"]
    else:
        instruction = read_text(data_args.instruction_path, "Instruction file")
        budget = training_args.max_length
        fitted = [fit_to_budget(tokenizer, instruction, r["document"], r["summary"], budget) for r in rows]
        prompts = [f["prompt"] for f in fitted if f is not None]
        if len(prompts) != len(rows):
            raise ConfigError(f"{len(rows) - len(prompts)} reference summaries do not fit max_length={budget} "
                              "with their prompt: raise --max_length.")
    device = "cuda" if torch.cuda.is_available() else None
    model = load_model(model_args, device=device)
    if eval_args.adapter_path:
        from peft import PeftModel

        if not (Path(eval_args.adapter_path) / "adapter_config.json").is_file():
            raise ConfigError(f"{eval_args.adapter_path} holds no adapter_config.json: pass the adapter folder "
                              "written by train.py (OUTPUT_DIR/adapter).")
        model = PeftModel.from_pretrained(model, eval_args.adapter_path)
    return generate_summaries(model, tokenizer, prompts, eval_args.max_new_tokens, eval_args.num_beams,
                              eval_args.generation_batch_size)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def evaluate(data_args: DataArguments, eval_args: EvalArguments, training_args: SFTConfig,
             model_args: ModelConfig) -> dict:
    """Write predictions.jsonl and metrics.json to output_dir and return the metrics."""
    output_dir = Path(training_args.output_dir)
    if eval_args.predictions_file:
        mode = "predictions_file"
        rows = read_predictions(eval_args.predictions_file)
    else:
        dataset, prepared = load_eval_rows(data_args, eval_args, training_args.seed)
        if eval_args.baseline == "lead":
            mode = "lead"
            predictions = [lead_sentence(article) for article in dataset["document"]]
        else:
            mode = "model"
            predictions = generate_for(dataset, prepared, data_args, eval_args, training_args, model_args)
        rows = [{"id": i, "prediction": p, "reference": r}
                for i, p, r in zip(dataset["id"], predictions, dataset["summary"], strict=False)]
    metrics = compute_rouge([r["prediction"] for r in rows], [r["reference"] for r in rows],
                            eval_args.bootstrap_samples, training_args.seed)
    metrics["mode"] = mode
    if mode == "model":
        metrics |= {"model": model_args.model_name_or_path, "adapter": eval_args.adapter_path,
                    "max_new_tokens": eval_args.max_new_tokens, "num_beams": eval_args.num_beams}
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(output_dir / PREDICTIONS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_manifest(output_dir, mode=mode, dataset=data_args.dataset_name, split=eval_args.eval_split)
    # metrics.json last: its presence marks a complete evaluation.
    write_atomic(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def format_table(results: dict[str, dict]) -> str:
    """A plain-text ROUGE table, one row per named result."""
    header = f"{'':<12}" + "".join(f"{key:>11}" for key in ROUGE_TYPES)
    lines = [header]
    for name, metrics in results.items():
        lines.append(f"{name:<12}" + "".join(f"{metrics[key]:>11.2f}" for key in ROUGE_TYPES))
    return "\n".join(lines)
