"""Load articles and summaries, clean them, fit them to the token budget, and save prompt-completion splits."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path

import datasets
import numpy as np
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from .config import ConfigError, DataArguments
from .layout import DATA_DIR, STATS_FILE
from .manifest import file_hash, publish_dir, rows_fingerprint, tmp_dir_for, write_atomic
from .prompts import Prompt, fit_to_budget
from .stage import is_unfinished, reuse_or_make

logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
PREPARED_COLUMNS = ("id", "document", "summary", "prompt", "completion")
# A single file is split 90/5/5 with the held-out tenth rounded up: below 11 rows it holds one row, which cannot be
# halved into a validation and a test row.
MIN_SINGLE_FILE_ROWS = 11
# datasets draws a progress bar for every map; below this many rows the work takes a moment and the bar is noise.
PROGRESS_MIN_ROWS = 5000
JSON_TYPES = {list: "list", dict: "object", int: "number", float: "number", bool: "boolean"}


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """datasets' progress bars on or off for the work inside, as they were afterwards."""
    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()


def is_prepared(path: str | Path) -> bool:
    """A folder written completely by `save_prepared` (the stats file is written last, inside the temp folder)."""
    path = Path(path)
    return (not is_unfinished(path) and (path / "dataset_dict.json").is_file()
            and (path / STATS_FILE).is_file())


def check_json_file(path: Path) -> None:
    """Fail early, naming the line, on a file that is not UTF-8 JSON lines (datasets' own errors name neither)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line} is not valid UTF-8 (byte {raw[err.start]:#04x}): re-save the file as "
                          "UTF-8.") from None
    if not text.strip():
        raise ConfigError(f"Data file {path} is empty: it needs one JSON object per line.")
    if path.suffix == ".json" and text.lstrip()[:1] in "[{":
        try:
            json.loads(text)
            return  # one JSON document (a list of rows): datasets reads it as is
        except json.JSONDecodeError:
            pass
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number} is not valid JSON ({err.msg}): the file needs one JSON object per "
                              "line (JSON lines).") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number} is a JSON {type(row).__name__}, not an object: each line must be "
                              '{"document": ..., "summary": ...}.')


def _local_files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.stem == split and p.suffix in LOCAL_FORMATS)


def load_raw_split(data_args: DataArguments, split: str) -> Dataset:
    """One split from the hub, a local file (the whole file is the split) or a folder of `{split}.{ext}` files."""
    path = Path(data_args.dataset_name)
    if path.exists():
        if is_unfinished(path) or (path / "dataset_dict.json").is_file():
            raise ConfigError(f"{path} is an incomplete prepared dataset (an interrupted prepare_data.py leaves no "
                              f"{STATS_FILE}): run `make data` again.")
        files = _local_files(path, split)
        if not files:
            raise ConfigError(f"No file for split '{split}' in {path}: expected {split}.jsonl, .json, .csv or "
                              ".parquet there, or pass a single file as --dataset_name.")
        suffix = files[0].suffix
        if suffix not in LOCAL_FORMATS:
            raise ConfigError(f"Unsupported data file {files[0]}: use .jsonl, .json, .csv or .parquet.")
        for file in files:
            if file.stat().st_size == 0:
                raise ConfigError(f"Data file {file} is empty: it needs a header or JSON line per row.")
            if LOCAL_FORMATS[file.suffix] == "json":
                check_json_file(file)
            elif file.suffix == ".csv":
                try:
                    file.read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    raise ConfigError(f"{file} is not valid UTF-8: re-save the file as UTF-8.") from None
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
    if len(ds) == 0:
        raise ConfigError(f"Split '{split}' of {data_args.dataset_name} has no rows.")
    ids = (ds[data_args.id_column] if data_args.id_column in ds.column_names
           else [f"{split}-{i}" for i in range(len(ds))])
    columns = {}
    for column in (data_args.text_column, data_args.summary_column):
        values = columns[column] = ds[column]
        bad = next((i for i, value in enumerate(values) if value is not None and not isinstance(value, str)), None)
        if bad is not None:
            kind = JSON_TYPES.get(type(values[bad]), type(values[bad]).__name__)
            raise ConfigError(f"Split '{split}' row {bad + 1} (id {str(ids[bad])!r}): `{column}` is a {kind}, not a "
                              "string: every article and summary must be one string (join a list of sentences with "
                              "newlines).")
    seen, duplicates = set(), []
    for row_id in map(str, ids):
        if row_id in seen:
            duplicates.append(row_id)
        seen.add(row_id)
    if duplicates:
        raise ConfigError(f"Split '{split}' has {len(duplicates)} duplicate id(s) in column '{data_args.id_column}' "
                          f"(first: {duplicates[0]!r}): ids must be unique so each prediction matches one row; "
                          "remove the duplicates.")
    documents, summaries = columns[data_args.text_column], columns[data_args.summary_column]
    rows = len(ds)
    keep = [i for i in range(rows) if (documents[i] or "").strip() and (summaries[i] or "").strip()]
    ds = Dataset.from_dict({
        "id": [str(ids[i]) for i in keep],
        "document": [documents[i] for i in keep],
        "summary": [summaries[i] for i in keep],
    })
    if len(ds) == 0:
        raise ConfigError(f"Split '{split}' has no row with both a non-empty article ('{data_args.text_column}') and "
                          f"summary ('{data_args.summary_column}'): check the file and the column flags.")
    if rows - len(ds):
        logger.warning("Split '%s': dropped %d of %d rows with an empty article or summary.", split,
                       rows - len(ds), rows)
    return ds, {"rows": rows, "dropped_empty": rows - len(ds)}


def subsample(ds: Dataset, max_samples: int | None, seed: int) -> Dataset:
    """Deterministic by seed: the same seed and size always give the same rows."""
    if max_samples is None or max_samples >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(max_samples))


def prepare_split(ds: Dataset, tokenizer, instruction: str, max_length: int, num_proc: int | None = None):
    """Map a standardized split to prompt-completion rows that fit `max_length`; returns (dataset, stats)."""

    def fit(row):
        fitted = fit_to_budget(tokenizer, instruction, row["document"], row["summary"], max_length)
        if fitted is None:
            return {"prompt": [], "completion": [], "document": row["document"], "num_tokens": -1, "truncated": False}
        return fitted

    with progress_bars(len(ds) >= PROGRESS_MIN_ROWS):
        mapped = ds.map(fit, num_proc=num_proc, desc="Fitting articles to max_length")
    kept = mapped.select([i for i, n in enumerate(mapped["num_tokens"]) if n > 0])
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
    prompt = Prompt.load(tokenizer, data_args.instruction_path)
    plan = {
        "train": (data_args.dataset_train_split, data_args.max_train_samples),
        "validation": (data_args.dataset_eval_split, data_args.max_eval_samples),
        "test": (data_args.dataset_test_split, data_args.max_test_samples),
    }
    splits, stats = {}, {"max_length": max_length, "seed": seed, "dataset_name": data_args.dataset_name,
                         "settings": prepare_settings(data_args, prompt, max_length, seed)}
    single_file = Path(data_args.dataset_name).is_file()
    if single_file:
        logger.warning("%s is a single file: carving validation and test splits (5%% each) from it by seed %d.",
                       data_args.dataset_name, seed)
        whole, counts = standardize(load_raw_split(data_args, "train"), data_args, "train")
        if len(whole) < MIN_SINGLE_FILE_ROWS:
            raise ConfigError(f"{data_args.dataset_name} has {len(whole)} usable rows; carving train, validation and "
                              f"test splits from one file needs at least {MIN_SINGLE_FILE_ROWS}: add rows, or pass a "
                              "folder with train.jsonl, validation.jsonl and test.jsonl as --dataset_name.")
        held = whole.train_test_split(test_size=0.1, seed=seed)
        val_test = held["test"].train_test_split(test_size=0.5, seed=seed)
        raw = {"train": (held["train"], counts), "validation": (val_test["train"], {}), "test": (val_test["test"], {})}
    else:
        raw = {name: standardize(load_raw_split(data_args, split), data_args, split)
               for name, (split, _) in plan.items()}
    for name, (ds, counts) in raw.items():
        ds = subsample(ds, plan[name][1], seed)
        if len(ds) == 0:
            raise ConfigError(f"Split '{plan[name][0]}' has no row with both an article and a summary.")
        prepared, split_stats = prepare_split(ds, tokenizer, prompt.instruction, max_length, num_proc)
        if len(prepared) == 0:
            raise ConfigError(f"No summary in split '{plan[name][0]}' fits max_length={max_length} with its "
                              "prompt: raise --max_length.")
        if name == "test" and split_stats["dropped_summary_too_long"]:
            # A test set that silently loses its long references scores a different benchmark.
            raise ConfigError(f"{split_stats['dropped_summary_too_long']} reference summaries of split "
                              f"'{plan[name][0]}' do not fit max_length={max_length} with their prompt: raise "
                              "--max_length so every test row is scored.")
        if split_stats["dropped_summary_too_long"]:
            logger.warning("%s: dropped %d rows whose summary does not fit max_length=%d.", name,
                           split_stats["dropped_summary_too_long"], max_length)
        split_stats["fingerprint"] = rows_fingerprint(
            {"id": r["id"], "prompt": r["prompt"], "completion": r["completion"]} for r in prepared)
        splits[name] = prepared
        stats[name] = counts | split_stats
        logger.info("%s: %s", name, describe_split(stats[name]))
    return DatasetDict(splits), stats


def save_prepared(dataset: DatasetDict, stats: dict, path: str | Path) -> None:
    """Write to a temporary folder and rename it into place, so a crash never leaves a complete-looking folder."""
    tmp = tmp_dir_for(path)
    with progress_bars(False):  # a few seconds even for XSum's train split
        dataset.save_to_disk(str(tmp))
    write_atomic(tmp / STATS_FILE, json.dumps(stats, indent=2) + "\n")
    publish_dir(tmp, path)


def load_prepared(path: str | Path) -> DatasetDict:
    if not is_prepared(path):
        raise ConfigError(f"{path} is not a complete prepared dataset (no {STATS_FILE}). Run `make data` again.")
    dataset = load_from_disk(str(path))
    for name, split in dataset.items():
        missing = [c for c in PREPARED_COLUMNS if c not in split.column_names]
        if missing or len(split) == 0:
            raise ConfigError(f"Split '{name}' of the prepared data in {path} is "
                              f"{'missing columns ' + str(missing) if missing else 'empty'}: run `make data` again.")
    return dataset


def prepared_stats(path: str | Path) -> dict:
    return json.loads((Path(path) / STATS_FILE).read_text())


def check_prepared_budget(path: str | Path, max_length: int) -> None:
    """Prepared rows were fitted to one max_length; under a smaller one TRL would cut the summary and its EOS."""
    prepared = prepared_stats(path).get("max_length")
    if prepared is not None and prepared != max_length:
        raise ConfigError(f"{path} was prepared for max_length={prepared}, not {max_length}: run prepare_data.py "
                          f"again with --max_length {max_length} (or delete {path}), or pass --max_length {prepared}.")


def check_prepared_prompt(path: str | Path, prompt_hash: str) -> None:
    """Prepared rows were rendered with one chat template and instruction; training must use the same ones."""
    prepared = (prepared_stats(path).get("settings") or {}).get("prompt_hash")
    if prepared is not None and prepared != prompt_hash:
        raise ConfigError(f"{path} was prepared with another prompt (chat template or instruction) than this run's: "
                          "run prepare_data.py again with this run's --chat_template_path and --instruction_path, or "
                          "train with the ones it was prepared with.")


def describe_split(stats: dict) -> str:
    """One split's statistics as a line a person reads."""
    tokens = stats["num_tokens"]
    sampled = stats["kept"] + stats["dropped_summary_too_long"]
    notes = [f"{stats['dropped_empty']} empty"] if stats.get("dropped_empty") else []
    if "rows" in stats and sampled < stats["rows"] - stats.get("dropped_empty", 0):
        notes.append(f"a seeded sample of {sampled}")
    if stats["dropped_summary_too_long"]:
        notes.append(f"{stats['dropped_summary_too_long']} with a summary too long for max_length")
    source = f" of {stats['rows']}" if "rows" in stats else ""
    return (f"{stats['kept']} rows kept{source}{' (' + ', '.join(notes) + ')' if notes else ''}, "
            f"{stats['truncated_articles']} articles cut to fit; tokens p50 {tokens['p50']}, p90 {tokens['p90']}, "
            f"p99 {tokens['p99']}, max {tokens['max']}")


def prepare_settings(data_args: DataArguments, prompt: Prompt, max_length: int, seed: int) -> dict:
    """Everything prepared rows depend on: the data arguments, the local data files' contents, the tokenizer that
    counts the budget, the prompt (template and instruction), max_length and seed."""
    path = Path(data_args.dataset_name)
    files = ([path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in LOCAL_FORMATS)
             if path.is_dir() else [])
    return {"data": dataclasses.asdict(data_args), "data_files": {p.name: file_hash(p) for p in files},
            "tokenizer": prompt.tokenizer.name_or_path, "prompt_hash": prompt.hash, "max_length": max_length,
            "seed": seed}


def reuse_prepared(path: str | Path, settings: dict, overwrite: bool) -> bool:
    """True when `path` holds data prepared completely with these settings (a re-run reuses it); False when there
    is none or it is to be replaced (`overwrite`); data prepared with other settings is an error naming them."""
    made_with = (prepared_stats(path).get("settings") or {}) if is_prepared(path) else None
    return reuse_or_make(path, "prepared data", made_with, settings, overwrite)


def prepare(data_args: DataArguments, training_args, model_args, overwrite: bool) -> tuple[Path, bool]:
    """The data stage: OUTPUT_DIR/data prepared for the recipe's tokenizer and prompt, or reused when it was prepared
    with the same settings. Returns the folder and whether it was reused."""
    from .manifest import check_output_path
    from .modeling import load_tokenizer  # loads transformers' model code: only the data stage needs it here

    check_output_path(training_args.output_dir)
    target = Path(training_args.output_dir) / DATA_DIR
    tokenizer = load_tokenizer(model_args.model_name_or_path, training_args.chat_template_path,
                               revision=model_args.model_revision)
    settings = prepare_settings(data_args, Prompt.load(tokenizer, data_args.instruction_path),
                                training_args.max_length, training_args.seed)
    if reuse_prepared(target, settings, overwrite):
        return target, True
    dataset, stats = prepare_datasets(data_args, tokenizer, training_args.max_length, training_args.seed,
                                      training_args.dataset_num_proc)
    save_prepared(dataset, stats, target)
    return target, False
