"""A run folder's layout: the name of every file and folder the stages write (`make all OUTPUT_DIR=run`), defined
once for every stage, the report, the model cards and publishing, and the one reader of each file format.

    run/data/            prepared rows (prepare_data.py), with stats.json
    run/adapter/         the trained adapter (train.py), with run_config.json and log_history.json
    run/merged/          the merged model (merge.py)
    run/eval/<name>/     an evaluation (evaluate.py): predictions.jsonl, metrics.json
    run/report/          report.md and its plots (report.py)
    run/gguf/            GGUF exports (export_gguf.py)
    run/curve/           the learning curve (curve.py)
    run/metrics.json     the evaluations side by side (scripts/compare.py)
Every output folder also holds manifest.json (what made it: settings, versions, date).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = "data"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
EVAL_DIR = "eval"
REPORT_DIR = "report"
GGUF_DIR = "gguf"
CURVE_DIR = "curve"

MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.json"
RUN_CONFIG_FILE = "run_config.json"
LOG_HISTORY_FILE = "log_history.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
PARTIAL_PREDICTIONS_FILE = "predictions.partial.jsonl"
CARD_FILE = "README.md"


def file_manifest(path: str | Path) -> Path:
    """The manifest of an output that is one file (summarize.py's --output_file): beside it, `<name>.manifest.json`."""
    path = Path(path)
    return path.with_name(path.name + "." + MANIFEST_FILE)


def read_json(path: str | Path):
    """A JSON file's content, or None when the file is absent or unreadable (a folder from another tool or version
    lacks the file; readers then fall back to what else the folder holds)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_jsonl(path: str | Path) -> list[dict]:
    """The objects of a JSON-lines file, blank lines skipped."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
