"""The learning curve of docs/quality.md: test ROUGE-1 (95% interval) of each model's fine-tuned adapter against the
number of training rows, from the rows bench/quality_curve.sh appended to bench/results/quality.jsonl.

    python bench/plot_quality_curve.py --output docs/quality_curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sumtune.curve import plot_curve  # noqa: E402


def curve_rows(path: Path) -> dict[str, list[dict]]:
    """The greedy adapter rows of the curve (notes "curve MODEL SIZE"), the last one per model and size."""
    latest: dict[tuple[str, int], dict] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if (row.get("system") == "adapter" and str(row.get("note", "")).startswith("curve ")
                and not row.get("invalid")):
            _, model, _ = row["note"].split(";")[0].split()[:3]
            latest[(model, row["rows"]["train"])] = row
    curves: dict[str, list[dict]] = {}
    for (model, _), row in sorted(latest.items()):
        curves.setdefault(model, []).append(row)
    return curves


def main():
    """One plot per model through sumtune.curve.plot_curve, the drawing `make curve` makes. The bench's points come
    from separate GPU runs whose per-row scores are not kept, so they get no fit or projection (`make curve` fits
    its own runs)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/quality.jsonl")
    parser.add_argument("--output", type=Path, default=ROOT / "docs/quality_curve.png",
                        help="the plot; with several models, one file each (NAME-MODEL.png)")
    args = parser.parse_args()
    curves = curve_rows(args.results)
    if not curves:
        raise SystemExit(f"error: {args.results} holds no learning-curve rows (notes 'curve MODEL SIZE'): run "
                         "bench/quality_curve.sh first")
    for model, rows in curves.items():
        curve = {"points": [{"rows": r["rows"]["train"], "rouge1": r["rouge1"], "ci95": r["ci95"]} for r in rows],
                 "projection": {"rouge1": {"fit": None, "reason": "points from separate GPU runs (bench/quality.py); "
                                                                  "`make curve` fits and projects its own runs"}}}
        output = args.output if len(curves) == 1 else args.output.with_stem(f"{args.output.stem}-{model}")
        plot_curve(curve, output)
        print(output)


if __name__ == "__main__":
    main()
