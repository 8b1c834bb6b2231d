"""Collect several evaluations into one ROUGE table and JSON file.

    python scripts/compare.py base=outputs/demo/eval/base finetuned=outputs/demo/eval/merged \
        lead=outputs/demo/eval/lead --output outputs/demo/metrics.json
"""

import argparse
import json
from pathlib import Path

from sumtune.evaluation import format_table
from sumtune.layout import METRICS_FILE
from sumtune.manifest import write_atomic
from sumtune.metrics import ROUGE_TYPES, rounded


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=EVAL_DIR pairs")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    results, table = {}, {}
    for pair in args.runs:
        name, _, folder = pair.partition("=")
        path = Path(folder) / METRICS_FILE
        if not path.is_file():
            raise SystemExit(f"error: {path} not found: run that evaluation first.")
        metrics = rounded(json.loads(path.read_text()))
        table[name] = metrics
        results[name] = {key: metrics[key] for key in ROUGE_TYPES} | {"ci95": metrics["ci95"]}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, json.dumps(results, indent=2) + "\n")
    print(format_table(table))
    print(f"ROUGE F1 x 100 [95% interval]; written to {output}")


if __name__ == "__main__":
    main()
