"""Load articles and summaries, clean them, fit them to the token budget, and save prompt-completion splits."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from .config import ConfigError, DataArguments
from .prompts import build_messages, read_text, render_full

logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
STATS_FILE = "stats.json"


def is_prepared(path: str | Path) -> bool:
    """A folder written completely by `save_prepared` (the stats file is written last, inside the temp folder)."""
    path = Path(path)
    return (path / "dataset_dict.json").is_file() and (path / STATS_FILE).is_file()


def _local_files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.stem == split and p.suffix in LOCAL_FORMATS)


def load_raw_split(data_args: DataArguments, split: str) -> Dataset:
    """One split from the hub, a local file (the whole file is the split) or a folder of `{split}.{ext}` files."""
    path = Path(data_args.dataset_name)
    if path.exists():
        files = _local_files(path, split)
        if not files:
            raise ConfigError(f"No file for split '{split}' in {path}: expected {split}.jsonl, .json, .csv or "
                              ".parquet there, or pass a single file as --dataset_name.")
        suffix = files[0].suffix
        if suffix not in LOCAL_FORMATS:
            raise ConfigError(f"Unsupported data file {files[0]}: use .jsonl, .json, .csv or .parquet.")
        if files[0].stat().st_size == 0:
            raise ConfigError(f"Data file {files[0]} is empty.")
        try:
            return load_dataset(LOCAL_FORMATS[suffix], data_files=[str(f) for f in files], split="train")
        except Exception as err:  # datasets wraps parser errors in several exception types
            raise ConfigError(f"Could not read {files[0]} as {suffix} ({type(err).__name__}: {err}). "
                              "Check that the file is valid UTF-8 with one JSON object per line.") from None
    try:
        return load_dataset(data_args.dataset_name, data_args.dataset_config, revision=data_args.dataset_revision,
                            split=split)
    except Exception as err:  # offline, unknown id, unknown split: all surface as different exception types
        raise ConfigError(f"Could not load split '{split}' of dataset '{data_args.dataset_name}' from the hub "
                          f"({type(err).__name__}: {err}). Check the name and network, or pass a local file "
                          "or folder as --dataset_name.") from None


def standardize(ds: Dataset, data_args: DataArguments, split: str) -> tuple[Dataset, dict[str, int]]:
    """Rename to `id`/`document`/`summary`, drop rows whose article or summary is empty, and count them."""
    missing = [c for c in (data_args.text_column, data_args.summary_column) if c not in ds.column_names]
    if missing:
        flag = {data_args.text_column: "--text_column", data_args.summary_column: "--summary_column"}
        hints = ", ".join(f"{c!r} (set {flag[c]})" for c in missing)
        raise ConfigError(f"Split '{split}' has no column {hints}; its columns are {ds.column_names}.")
    ids = (ds[data_args.id_column] if data_args.id_column in ds.column_names
           else [f"{split}-{i}" for i in range(len(ds))])
    ds = Dataset.from_dict({
        "id": [str(i) for i in ids],
        "document": ds[data_args.text_column],
        "summary": ds[data_args.summary_column],
    })
    rows = len(ds)
    ds = ds.filter(lambda r: bool((r["document"] or "").strip()) and bool((r["summary"] or "").strip()))
    return ds, {"rows": rows, "dropped_empty": rows - len(ds)}


def subsample(ds: Dataset, max_samples: int | None, seed: int) -> Dataset:
    """Deterministic by seed: the same seed and size always give the same rows."""
    if max_samples is None or max_samples >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(max_samples))


def fit_to_budget(tokenizer, instruction: str, article: str, summary: str, max_length: int) -> dict | None:
    """Cut the article (never the summary) so prompt + summary + EOS fit `max_length` tokens.

    Returns the prompt-completion row with its token count, or None when even an empty article cannot fit.
    The cut falls on a token boundary of the article, found through the fast tokenizer's character offsets.
    """
    article = article.strip()
    summary = summary.strip()
    offsets = None
    cut = article
    for _ in range(8):  # the join between article and template can merge a token: re-check until it fits
        row = build_messages(instruction, cut, summary)
        n_tokens = len(tokenizer(render_full(tokenizer, row["prompt"], row["completion"]),
                                 add_special_tokens=False)["input_ids"])
        if n_tokens <= max_length:
            return {**row, "document": cut, "num_tokens": n_tokens, "truncated": cut != article}
        if offsets is None:
            offsets = tokenizer(article, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            keep = len(offsets)
        keep -= n_tokens - max_length
        if keep <= 0:
            return None
        cut = article[: offsets[keep - 1][1]].rstrip()
    return None


def prepare_split(ds: Dataset, tokenizer, instruction: str, max_length: int, num_proc: int | None = None):
    """Map a standardized split to prompt-completion rows that fit `max_length`; returns (dataset, stats)."""

    def fit(row):
        fitted = fit_to_budget(tokenizer, instruction, row["document"], row["summary"], max_length)
        if fitted is None:
            return {"prompt": [], "completion": [], "document": row["document"], "num_tokens": -1, "truncated": False}
        return fitted

    mapped = ds.map(fit, num_proc=num_proc, desc="Fitting articles to max_length")
    kept = mapped.filter(lambda r: r["num_tokens"] > 0)
    lengths = np.array(kept["num_tokens"]) if len(kept) else np.array([0])
    stats = {
        "kept": len(kept),
        "dropped_summary_too_long": len(mapped) - len(kept),
        "truncated_articles": int(sum(kept["truncated"])),
        "num_tokens": {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 99)} | {"max": int(lengths.max())},
    }
    return kept, stats


def prepare_datasets(data_args: DataArguments, tokenizer, max_length: int, seed: int,
                     num_proc: int | None = None) -> tuple[DatasetDict, dict]:
    """All three splits, cleaned, subsampled by seed and fitted to the budget, plus their statistics."""
    instruction = read_text(data_args.instruction_path, "Instruction file")
    plan = {
        "train": (data_args.dataset_train_split, data_args.max_train_samples),
        "validation": (data_args.dataset_eval_split, data_args.max_eval_samples),
        "test": (data_args.dataset_test_split, data_args.max_test_samples),
    }
    splits, stats = {}, {"max_length": max_length, "seed": seed, "dataset_name": data_args.dataset_name}
    single_file = Path(data_args.dataset_name).is_file()
    if single_file:
        logger.warning("%s is a single file: carving validation and test splits (5%% each) from it by seed %d.",
                       data_args.dataset_name, seed)
        whole, counts = standardize(load_raw_split(data_args, "train"), data_args, "train")
        held = whole.train_test_split(test_size=0.1, seed=seed) if len(whole) >= 3 else None
        if held is None:
            raise ConfigError(f"{data_args.dataset_name} has {len(whole)} usable rows; need at least 3 to carve "
                              "train, validation and test splits.")
        val_test = held["test"].train_test_split(test_size=0.5, seed=seed)
        raw = {"train": (held["train"], counts), "validation": (val_test["train"], {}), "test": (val_test["test"], {})}
    else:
        raw = {name: standardize(load_raw_split(data_args, split), data_args, split)
               for name, (split, _) in plan.items()}
    for name, (ds, counts) in raw.items():
        ds = subsample(ds, plan[name][1], seed)
        if len(ds) == 0:
            raise ConfigError(f"Split '{plan[name][0]}' has no row with both an article and a summary.")
        prepared, split_stats = prepare_split(ds, tokenizer, instruction, max_length, num_proc)
        if len(prepared) == 0:
            raise ConfigError(f"No summary in split '{plan[name][0]}' fits max_length={max_length} with its "
                              "prompt: raise --max_length.")
        splits[name] = prepared
        stats[name] = counts | split_stats
        logger.info("%s: %s", name, json.dumps(stats[name]))
    return DatasetDict(splits), stats


def save_prepared(dataset: DatasetDict, stats: dict, path: str | Path) -> None:
    """Write to a temporary folder and rename it into place, so a crash never leaves a complete-looking folder."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def load_prepared(path: str | Path) -> DatasetDict:
    if not is_prepared(path):
        raise ConfigError(f"{path} is not a complete prepared dataset (no {STATS_FILE}). Run `make data` again.")
    return load_from_disk(str(path))
