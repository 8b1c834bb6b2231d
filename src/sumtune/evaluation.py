"""Predictions and ROUGE for a model, an existing predictions file, or the lead-1 baseline.

Model predictions are appended to `predictions.partial.jsonl` and flushed as they are made; a killed evaluation,
run again with the same settings, generates only the rows that are missing. The final files are written in
dataset order through temporary files, metrics.json last: its presence marks a complete evaluation.

Under `accelerate launch` each process generates its own share of the batches one process would make (whole
batches, dealt so every share holds about the same KV-cache tokens) into its own partial file,
`predictions.partial.rank<N>.jsonl` beyond rank 0; the main process then merges them and alone writes the final
files. A re-run reads every partial file, so it resumes whatever number of processes wrote them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

from accelerate import PartialState
from trl import ModelConfig, SFTConfig

from .config import ConfigError, DataArguments, EvalArguments, RunError
from .data import (
    check_prepared_budget,
    is_prepared,
    load_prepared,
    load_raw_split,
    standardize,
    subsample,
)
from .decoding import Decoding
from .generation import batch_cost, encode_prompts
from .inferring import (
    append_predictions,
    check_merge_options,
    generation_settings,
    generation_tokenizer,
    load_generation_model,
)
from .layout import METRICS_FILE, PREDICTIONS_FILE
from .manifest import (
    check_output_path,
    file_hash,
    read_manifest,
    redact,
    rows_fingerprint,
    training_config,
    write_atomic,
    write_manifest,
)
from .metrics import ROUGE_TYPES, compute_rouge, rounded
from .predictions import (
    PARTIAL_PREFIX,
    deal_batches,
    load_partial,
    merge_partials,
    partial_files,
    partial_path,
    stale_partial,
)
from .preflight import check_adapter, check_model_source, check_precision, check_process_group
from .prompts import Prompt
from .stage import check_output_name, is_unfinished, reuse_or_make

logger = logging.getLogger(__name__)



def read_predictions(path: str | Path) -> list[dict]:
    """Rows of a JSONL file with non-null `prediction` and `reference` strings (an `id` is optional)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Predictions file not found: {path}.")
    if is_unfinished(path) or path.name.startswith(PARTIAL_PREFIX):
        raise ConfigError(f"{path} is an unfinished predictions file: re-run evaluate.py with the same settings to "
                          f"complete it, then score {PREDICTIONS_FILE}.")
    rows, empty = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid UTF-8: re-save it as UTF-8 JSON lines.") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number} is not valid JSON ({err.msg}).") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number} is not a JSON object with `prediction` and `reference`.")
        missing = [k for k in ("prediction", "reference") if not isinstance(row.get(k), str)]
        if missing:
            raise ConfigError(f"{path}:{number} has no string field {', '.join(missing)}: every line needs "
                              "`prediction` and `reference`.")
        rows.append({"id": str(row.get("id", number)), "prediction": row["prediction"],
                     "reference": row["reference"]})
        if not row["reference"].strip():
            empty.append(number)
    if not rows:
        raise ConfigError(f"{path} holds no predictions.")
    # Any prediction scores 0 against an empty reference: such a table would measure the file, not the model.
    if len(empty) == len(rows):
        raise ConfigError(f"Every reference in {path} is empty ({len(rows)} rows): write each row's reference summary "
                          "into its `reference` field.")
    if empty:
        raise ConfigError(f"{len(empty)} of {len(rows)} rows in {path} have an empty reference (first: line "
                          f"{empty[0]}): fill in their `reference` or remove those lines.")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"{path} lists id {duplicate!r} more than once: each row must be scored once.")
    return rows


def load_eval_rows(data_args: DataArguments, eval_args: EvalArguments, seed: int, max_length: int | None):
    """The split to score: from a prepared folder (already fitted to the budget) or raw data (fitted later)."""
    if is_prepared(data_args.dataset_name):
        if max_length is not None:  # generation: prompts were cut for this budget
            check_prepared_budget(data_args.dataset_name, max_length)
        dataset = load_prepared(data_args.dataset_name)
        if eval_args.eval_split not in dataset:
            raise ConfigError(f"Prepared data has splits {list(dataset)}, not '{eval_args.eval_split}'.")
        return dataset[eval_args.eval_split], True
    ds, _ = standardize(load_raw_split(data_args, eval_args.eval_split), data_args, eval_args.eval_split)
    return subsample(ds, data_args.max_test_samples, seed), False


def lead_sentence(article: str) -> str:
    """XSum articles put one sentence per line: lead-1 is the first non-empty line."""
    return next((line.strip() for line in article.splitlines() if line.strip()), "")


def eval_prompts(rows, prompt: Prompt, max_length: int, max_new_tokens: int) -> list:
    """Each row's prompt, its article cut as for any generation (Prompt.for_generation), prepared data or raw."""
    prompts = [prompt.for_generation(article, max_length, max_new_tokens) for article in rows["document"]]
    if any(p is None for p in prompts):
        raise ConfigError(f"max_length={max_length} leaves no room for the prompt and max_new_tokens="
                          f"{max_new_tokens}: raise --max_length or lower --max_new_tokens.")
    return prompts


def finished_predictions(output_dir: Path, ids: list[str]) -> list[str] | None:
    """The predictions of a complete evaluation, in row order, else None. Called after `finished_evaluation`, which
    refuses a complete evaluation made with other settings."""
    if not (output_dir / METRICS_FILE).is_file():
        return None
    try:
        rows = [json.loads(line) for line in (output_dir / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if [str(r.get("id")) for r in rows] != ids:
        return None
    return [r["prediction"] for r in rows]


def generate_missing(rows, prompt: Prompt, decoding: Decoding, eval_args: EvalArguments, training_args: SFTConfig,
                     model_args: ModelConfig, output_dir: Path, run_key: dict,
                     state: PartialState) -> tuple[list[str], dict | None] | None:
    """Every row's prediction, generating only those not already in a partial file; each process generates its
    share into its own partial file, which grows as they come. Returns them on the main process with the generation
    timing (None when nothing was generated), None elsewhere."""
    ids = [str(i) for i in rows["id"]]
    if eval_args.overwrite_output_dir:  # replaced on purpose: nothing made before is kept
        if state.is_main_process:
            (output_dir / METRICS_FILE).unlink(missing_ok=True)
            for path in partial_files(output_dir):
                path.unlink()
        state.wait_for_everyone()
    else:
        finished = finished_predictions(output_dir, ids)
        if finished is not None:
            logger.info("%s already holds all %d predictions made with these settings; rescoring them.",
                        output_dir, len(ids))
            return (finished, None) if state.is_main_process else None
    # Cut only once no finished evaluation can be rescored: fitting tokenizes every article.
    prompts = eval_prompts(rows, prompt, training_args.max_length, decoding.max_new_tokens)
    tokenizer = prompt.tokenizer
    # Every process reads every partial file before any process changes one, so all agree on what is missing.
    done, stale = merge_partials(output_dir, run_key, ids)
    if stale and not eval_args.overwrite_output_dir:
        raise stale_partial(stale[0], run_key)
    missing = [i for i in range(len(prompts)) if i not in done]
    if done and state.is_main_process:
        logger.info("Resuming: %d of %d predictions already made; generating %d.", len(done), len(prompts),
                    len(missing))
    todo = [prompts[i] for i in missing]
    encoded = encode_prompts(tokenizer, todo)
    batches = my_batches(decoding, [len(ids) for ids in encoded], state)
    state.wait_for_everyone()  # every process has read the partial files
    if state.is_main_process:  # drop stale files, cut lines a kill left short, so appended lines are read
        for path in partial_files(output_dir):
            load_partial(path, run_key, ids, overwrite=True)
    state.wait_for_everyone()  # before any process appends
    model = load_generation_model(eval_args, model_args, state) if batches else None
    state.wait_for_everyone()  # every model is loaded: the generation clock starts on all processes at once
    start = time.perf_counter()
    if batches:
        append_predictions(partial_path(output_dir, state.process_index), run_key, ids, todo, missing, encoded,
                           batches, tokenizer, decoding, model, progress=state.is_main_process)
    state.wait_for_everyone()
    seconds = time.perf_counter() - start
    if not state.is_main_process:
        return None
    timing = {"rows": len(missing), "seconds": round(seconds, 2), "processes": state.num_processes,
              "summaries_per_s": round(len(missing) / seconds, 2) if seconds > 0 else None}
    logger.info("Generated %d summaries in %.1f s on %d process(es): %s per second.", len(missing), seconds,
                state.num_processes, timing["summaries_per_s"])
    return every_prediction(output_dir, run_key, ids), timing


def my_batches(decoding: Decoding, lengths: list[int], state: PartialState) -> list[list[int]]:
    """The batches one process would make of the missing rows; under several processes each generates a share of
    whole batches, so a row meets the same batch-mates, padding and kernel shapes whatever the number of processes."""
    batches = decoding.plan(lengths)
    if state.num_processes == 1:
        return batches
    costs = [batch_cost(lengths, batch, decoding.max_new_tokens) for batch in batches]
    mine = deal_batches(costs, state.num_processes)[state.process_index]
    logger.info("Process %d of %d: generating %d rows in %d batches (%d of %d KV-cache tokens).",
                state.process_index, state.num_processes, sum(len(batches[k]) for k in mine), len(mine),
                sum(costs[k] for k in mine), sum(costs))
    return [batches[k] for k in mine]


def every_prediction(output_dir: Path, run_key: dict, ids: list[str]) -> list[str]:
    """Every row's prediction from the partial files of all processes, in row order."""
    done, _ = merge_partials(output_dir, run_key, ids)
    if len(done) < len(ids):
        raise RunError(f"{len(ids) - len(done)} of {len(ids)} predictions are missing from the partial files in "
                       f"{output_dir}: re-run with the same settings to generate them.")
    return [done[i] for i in range(len(ids))]


def process_state(training_args: SFTConfig) -> PartialState:
    """This process's place under `accelerate launch` (one process otherwise); refuses unconnected processes."""
    state = PartialState(cpu=training_args.use_cpu)
    check_process_group(state.num_processes, "evaluate every row and write the same files", "evaluate.py")
    return state


def check_inputs(data_args: DataArguments, eval_args: EvalArguments, training_args: SFTConfig,
                 model_args: ModelConfig) -> str:
    """Preflight, before any model is loaded; returns the mode."""
    if eval_args.predictions_file:
        return "predictions_file"
    if eval_args.baseline == "lead":
        return "lead"
    check_precision(training_args, model_args, training=False)
    check_merge_options(eval_args, model_args)
    check_model_source(model_args.model_name_or_path)
    if eval_args.adapter_path:
        check_adapter(eval_args.adapter_path, model_args.model_name_or_path)
    return "model"


@dataclasses.dataclass
class Scored:
    """What one mode of evaluate() hands to the shared tail that scores and writes it."""

    rows: list[dict]  # {"id", "prediction", "reference"}
    dataset_fingerprint: str
    prompt_hash: str | None = None
    timing: dict | None = None  # the generation's rows, seconds and summaries/s (model mode)
    metrics: dict = dataclasses.field(default_factory=dict)  # more fields for metrics.json


def evaluate(data_args: DataArguments, eval_args: EvalArguments, training_args: SFTConfig,
             model_args: ModelConfig) -> dict | None:
    """Write predictions.jsonl, manifest.json and metrics.json to output_dir and return the metrics: of a model's
    summaries, of lead-1, or of a predictions file (`check_inputs` names the mode). A finished evaluation with the same
    settings is returned as it is. Under several processes only the main one writes and returns; the others None."""
    output_dir = Path(training_args.output_dir)
    state = process_state(training_args)
    mode = check_inputs(data_args, eval_args, training_args, model_args)
    if mode != "model" and not state.is_main_process:
        return None  # nothing to share out: the main process scores alone
    check_output_name(output_dir)
    check_output_path(output_dir)
    settings = {"mode": mode, "eval_split": eval_args.eval_split, "dataset": data_args.dataset_name}
    scoring = {"bootstrap_samples": eval_args.bootstrap_samples, "seed": training_args.seed}
    if mode == "predictions_file":
        scored = score_predictions_file(eval_args, settings, scoring, output_dir)
    elif mode == "lead":
        scored = score_lead(data_args, eval_args, training_args, settings, scoring, output_dir, state)
    else:
        scored = score_model(data_args, eval_args, training_args, model_args, settings, scoring, output_dir, state)
    if not isinstance(scored, Scored):
        return scored  # a finished evaluation's metrics, or None for a process that writes nothing
    return write_evaluation(scored, mode, settings, scoring, output_dir, (data_args, eval_args, training_args,
                                                                          model_args))


def score_predictions_file(eval_args: EvalArguments, settings: dict, scoring: dict, output_dir: Path):
    rows = read_predictions(eval_args.predictions_file)
    settings |= {"predictions_file": eval_args.predictions_file,
                 "predictions_hash": file_hash(eval_args.predictions_file)}
    finished = finished_evaluation(output_dir, settings, scoring, eval_args.overwrite_output_dir)
    return finished if finished is not None else Scored(rows, rows_fingerprint(rows))


def eval_dataset(data_args: DataArguments, eval_args: EvalArguments, training_args: SFTConfig, mode: str,
                 state: PartialState, settings: dict):
    """The rows to score, and their fingerprint (recorded in `settings`)."""
    # Under several processes one fills the datasets cache, the others then read it.
    with state.main_process_first() if mode == "model" else contextlib.nullcontext():
        dataset, _ = load_eval_rows(data_args, eval_args, training_args.seed,
                                    training_args.max_length if mode == "model" else None)
    settings["dataset_fingerprint"] = rows_fingerprint({"id": r["id"], "document": r["document"],
                                                        "summary": r["summary"]} for r in dataset)
    return dataset, settings["dataset_fingerprint"]


def paired(dataset, predictions: list[str]) -> list[dict]:
    return [{"id": str(i), "prediction": p, "reference": r}
            for i, p, r in zip(dataset["id"], predictions, dataset["summary"], strict=True)]


def score_lead(data_args, eval_args, training_args, settings: dict, scoring: dict, output_dir: Path, state):
    dataset, fingerprint = eval_dataset(data_args, eval_args, training_args, "lead", state, settings)
    finished = finished_evaluation(output_dir, settings, scoring, eval_args.overwrite_output_dir)
    if finished is not None:
        return finished
    return Scored(paired(dataset, [lead_sentence(article) for article in dataset["document"]]), fingerprint)


def score_model(data_args, eval_args, training_args, model_args, settings: dict, scoring: dict, output_dir: Path,
                state):
    dataset, fingerprint = eval_dataset(data_args, eval_args, training_args, "model", state, settings)
    # the tokenizer's template puts BOS first where due
    prompt = Prompt.load(generation_tokenizer(eval_args, training_args, model_args), data_args.instruction_path)
    decoding = eval_args.decoding
    settings |= generation_settings(eval_args, training_args, model_args, prompt, decoding)
    finished = finished_evaluation(output_dir, settings, scoring, eval_args.overwrite_output_dir)
    if finished is not None:
        return finished if state.is_main_process else None
    output_dir.mkdir(parents=True, exist_ok=True)
    generated = generate_missing(dataset, prompt, decoding, eval_args, training_args, model_args, output_dir,
                                 settings, state)
    if generated is None:
        return None  # the main process merges every process's predictions and writes the files
    predictions, timing = generated
    return Scored(paired(dataset, predictions), fingerprint, prompt.hash, timing,
                  {"model": model_args.model_name_or_path, "adapter": eval_args.adapter_path,
                   **decoding.text_settings()})


def write_evaluation(scored: Scored, mode: str, settings: dict, scoring: dict, output_dir: Path, args) -> dict:
    """The tail every mode shares: ROUGE with intervals, then predictions, manifest and (last) metrics written."""
    data_args, eval_args, training_args, model_args = args
    rows = scored.rows
    metrics = rounded(compute_rouge([r["prediction"] for r in rows], [r["reference"] for r in rows],
                                    eval_args.bootstrap_samples, training_args.seed))
    metrics |= {"mode": mode, **scored.metrics}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / METRICS_FILE).unlink(missing_ok=True)  # from here until the end the folder reads as incomplete
    write_atomic(output_dir / PREDICTIONS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    config = {"data": dataclasses.asdict(data_args), "eval": dataclasses.asdict(eval_args),
              "model": dataclasses.asdict(model_args), "training": training_config(training_args)}
    # `generation`: rows generated by this run, wall seconds from every model loaded to the last row, summaries/s.
    write_manifest(output_dir, settings=settings, scoring=scoring, config=redact(config),
                   dataset_fingerprint=scored.dataset_fingerprint, prompt_hash=scored.prompt_hash,
                   num_rows=len(rows), generation=scored.timing)
    # metrics.json last: its presence marks a complete evaluation.
    write_atomic(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    for path in partial_files(output_dir):
        path.unlink()
    return metrics


def finished_evaluation(output_dir: Path, settings: dict, scoring: dict, overwrite: bool) -> dict | None:
    """The metrics of a finished evaluation in output_dir made and scored with these settings (a re-run reuses
    them), else None: there is none, `overwrite` replaces it, or it was scored otherwise (its predictions are then
    scored anew). One made with other settings is refused."""
    manifest = read_manifest(output_dir) or {}
    made_with = (manifest.get("settings") or {}) if (output_dir / METRICS_FILE).is_file() else None
    if not reuse_or_make(output_dir, "an evaluation", made_with, settings, overwrite):
        return None
    if manifest.get("scoring") != scoring:
        return None  # same predictions, scored anew
    try:
        return json.loads((output_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def format_table(results: dict[str, dict]) -> str:
    """A plain-text ROUGE table, one row per named result: each score with its 95% bootstrap interval."""
    def cell(metrics: dict, key: str) -> str:
        low, high = (metrics.get("ci95") or {}).get(key) or (None, None)
        if low is None or high is None or not math.isfinite(low) or not math.isfinite(high):
            return f"{metrics[key]:.2f}"
        return f"{metrics[key]:.2f} [{low:.2f}, {high:.2f}]"

    rows = [("", list(ROUGE_TYPES))] + [(name, [cell(m, key) for key in ROUGE_TYPES]) for name, m in results.items()]
    label = max(len(name) for name, _ in rows)
    widths = [max(len(cells[k]) for _, cells in rows) for k in range(len(ROUGE_TYPES))]
    return "\n".join(f"{name:<{label}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True))
                     for name, cells in rows)
