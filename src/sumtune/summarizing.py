"""summarize.py: one article to stdout, or many (a JSONL or CSV file, or a folder of .txt files) to a JSONL file
through the batched generator, with the prompt and decoding of evaluate.py (`Prompt`, `Decoding`,
`inferring.generation_settings`).

Many articles are resumable as evaluations are: summaries are appended to `<output_file>.partial` as they are made,
headed by the settings that made them; a killed run started again with the same settings makes only the missing
ones. The output is written whole, in input order, once every row has its summary (or its error).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

from accelerate import PartialState

from .config import ConfigError, DataArguments, EvalArguments
from .decoding import Decoding
from .generation import encode_prompts
from .inferring import append_predictions, generation_settings, generation_tokenizer, load_generation_model
from .layout import file_manifest, read_json, read_jsonl
from .manifest import rows_fingerprint, write_atomic, write_manifest_file
from .predictions import load_partial
from .preflight import check_adapter, check_model_source
from .prompts import Prompt
from .stage import check_output_name, reuse_or_make

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".jsonl", ".json", ".csv")
NOT_TEXT_HINT = "pass the article as a plain text file (a PDF or Word file must be converted to text first)."


def decode_text(raw: bytes, source: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}): "
                          f"{NOT_TEXT_HINT}") from None
    if "\x00" in text:  # valid UTF-8 yet binary: text files hold no NUL bytes
        raise ConfigError(f"{source} is a binary file (it holds NUL bytes): {NOT_TEXT_HINT}")
    return text


def read_article(input_file: str | None) -> str:
    """One article as text, from a file or stdin (unset or `-`)."""
    if input_file in (None, "-"):
        return decode_text(sys.stdin.buffer.read(), "The input on stdin")
    if Path(input_file).is_file():
        return decode_text(Path(input_file).read_bytes(), input_file)
    raise ConfigError(f"Input file not found: {input_file}. Pass a text file or pipe the article in.")


def is_many(input_file: str | None) -> bool:
    """A file of articles or a folder of them (anything else is one article)."""
    return input_file not in (None, "-") and (Path(input_file).is_dir()
                                               or Path(input_file).suffix.lower() in TABLE_SUFFIXES)


def read_articles(input_file: str, data_args: DataArguments) -> list[dict]:
    """Rows `{"id", "text"}` in input order; a row whose text is missing or empty keeps its place with text None."""
    path = Path(input_file)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ConfigError(f"{path} holds no .txt files: put one article per .txt file there.")
        return [{"id": f.stem, "text": decode_text(f.read_bytes(), str(f))} for f in files]
    if not path.is_file():
        raise ConfigError(f"Input file not found: {path}. Pass a JSONL or CSV file, or a folder of .txt files.")
    text = decode_text(path.read_bytes(), str(path))
    if path.suffix.lower() == ".csv":
        records = list(csv.DictReader(text.splitlines()))
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{number} is not valid JSON ({err.msg}): one JSON object per line.") from None
    if not records:
        raise ConfigError(f"{path} holds no rows.")
    column, id_column = data_args.text_column, data_args.id_column
    if not any(isinstance(r, dict) and column in r for r in records):
        found = sorted(records[0]) if isinstance(records[0], dict) else type(records[0]).__name__
        raise ConfigError(f"{path} has no column `{column}` (found {found}): pass --text_column with the name of "
                          "the column that holds the articles.")
    rows = []
    for number, record in enumerate(records, 1):
        record = record if isinstance(record, dict) else {}
        row_id = record.get(id_column) if id_column else None
        value = record.get(column)
        rows.append({"id": str(row_id if row_id not in (None, "") else number),
                     "text": value if isinstance(value, str) and value.strip() else None})
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"{path} lists id {duplicate!r} more than once: give each row its own `{id_column}`.")
    return rows


def load_for_generation(eval_args: EvalArguments, training_args, model_args, data_args) -> tuple[Prompt, Decoding]:
    check_model_source(model_args.model_name_or_path)
    if eval_args.adapter_path:
        check_adapter(eval_args.adapter_path, model_args.model_name_or_path)
    prompt = Prompt.load(generation_tokenizer(eval_args, training_args, model_args), data_args.instruction_path)
    return prompt, eval_args.decoding


def summarize_one(data_args, eval_args, training_args, model_args) -> str:
    article = read_article(eval_args.input_file)
    if not article.strip():
        raise ConfigError("The article is empty: pass a text file with --input_file or pipe one in.")
    prompt, decoding = load_for_generation(eval_args, training_args, model_args, data_args)
    messages = prompt.for_generation(article, training_args.max_length, decoding.max_new_tokens)
    if messages is None:
        raise ConfigError(f"max_length={training_args.max_length} leaves no room for the prompt and "
                          f"max_new_tokens={decoding.max_new_tokens}: raise --max_length.")
    model = load_generation_model(eval_args, model_args, PartialState())  # as evaluate.py loads it, adapter included
    return decoding.generate(model, prompt.tokenizer, [messages])[0]


def summarize_many(data_args, eval_args, training_args, model_args) -> dict:
    """Summaries of every row of eval_args.input_file into eval_args.output_file; returns counts."""
    output = Path(eval_args.output_file)
    if output.is_dir() or output.suffix.lower() != ".jsonl":
        raise ConfigError(f"--output_file {output} must name a .jsonl file.")
    check_output_name(output, "--output_file")
    rows = read_articles(eval_args.input_file, data_args)
    prompt, decoding = load_for_generation(eval_args, training_args, model_args, data_args)
    run_key = generation_settings(eval_args, training_args, model_args, prompt, decoding) | {
        "input": rows_fingerprint({"id": r["id"], "text": r["text"]} for r in rows)}
    # The stage rule, as for every output: the same settings reuse a finished file, others are refused.
    made_with = (read_json(file_manifest(output)) or {}).get("settings") if output.is_file() else None
    if reuse_or_make(output, "summaries", made_with, run_key, eval_args.overwrite_output_dir,
                     occupied=output.exists(), flag="--output_file"):
        return summary_counts(output)
    output.unlink(missing_ok=True)  # replaced: until the new file is complete there is none
    ids = [r["id"] for r in rows]
    errors = {}
    prompts = {}
    for index, row in enumerate(rows):
        if row["text"] is None:
            errors[index] = f"no `{data_args.text_column}` text"
            continue
        messages = prompt.for_generation(row["text"], training_args.max_length, decoding.max_new_tokens)
        if messages is None:
            errors[index] = f"max_length={training_args.max_length} leaves no room for max_new_tokens"
        else:
            prompts[index] = messages
    for index, error in errors.items():
        logger.warning("Row %s: %s; it is written with `summary` null and this `error`.", ids[index], error)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    done = load_partial(partial, run_key, ids, overwrite=eval_args.overwrite_output_dir, flag="--output_file")
    missing = [i for i in prompts if i not in done]
    if done:
        logger.info("Resuming: %d of %d summaries already made; generating %d.", len(done), len(prompts),
                    len(missing))
    if missing:
        todo = [prompts[i] for i in missing]
        encoded = encode_prompts(prompt.tokenizer, todo)
        batches = decoding.plan([len(e) for e in encoded])
        model = load_generation_model(eval_args, model_args, PartialState())
        append_predictions(partial, run_key, ids, todo, missing, encoded, batches, prompt.tokenizer, decoding, model,
                           progress=True)
        done = load_partial(partial, run_key, ids, overwrite=False, flag="--output_file")
    lines = []
    for index, row_id in enumerate(ids):
        record = ({"id": row_id, "summary": done[index]} if index in done
                  else {"id": row_id, "summary": None, "error": errors.get(index, "not generated")})
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    write_manifest_file(file_manifest(output), settings=run_key, num_rows=len(rows))
    write_atomic(output, "".join(lines))  # last: a finished file always has its manifest
    partial.unlink(missing_ok=True)
    return {"rows": len(rows), "summaries": len(done), "errors": len(rows) - len(done)}


def summary_counts(output: Path) -> dict:
    """The counts summarize_many returns, read back from a finished output file."""
    records = read_jsonl(output)
    made = sum(record.get("summary") is not None for record in records)
    return {"rows": len(records), "summaries": made, "errors": len(records) - made}
