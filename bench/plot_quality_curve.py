"""The learning curve of docs/quality.md: test ROUGE-1 (95% interval) of each model's fine-tuned adapter against the
number of training rows, from the rows bench/quality_curve.sh appended to bench/results/quality.jsonl.

    python bench/plot_quality_curve.py --output docs/quality_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def curve_rows(path: Path) -> dict[str, list[dict]]:
    """The greedy adapter rows of the curve (notes "curve MODEL SIZE"), the last one per model and size."""
    latest: dict[tuple[str, int], dict] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("system") == "adapter" and str(row.get("note", "")).startswith("curve "):
            _, model, _ = row["note"].split()
            latest[(model, row["rows"]["train"])] = row
    curves: dict[str, list[dict]] = {}
    for (model, _), row in sorted(latest.items()):
        curves.setdefault(model, []).append(row)
    return curves


def lead_rouge1(path: Path) -> float | None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    leads = [r for r in rows if r.get("system") == "lead" and str(r.get("note", "")).startswith("curve ")]
    return leads[-1]["rouge1"] if leads else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/quality.jsonl")
    parser.add_argument("--output", type=Path, default=ROOT / "docs/quality_curve.png")
    args = parser.parse_args()
    curves = curve_rows(args.results)
    if not curves:
        raise SystemExit(f"error: {args.results} holds no learning-curve rows (notes 'curve MODEL SIZE'): run "
                         "bench/quality_curve.sh first")
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, rows in curves.items():
        sizes = [r["rows"]["train"] for r in rows]
        means = [r["rouge1"] for r in rows]
        low = [r["rouge1"] - r["ci95"]["rouge1"][0] for r in rows]
        high = [r["ci95"]["rouge1"][1] - r["rouge1"] for r in rows]
        ax.errorbar(sizes, means, yerr=[low, high], marker="o", capsize=3, label=model)
    lead = lead_rouge1(args.results)
    if lead is not None:
        ax.axhline(lead, color="grey", linestyle="--", linewidth=1, label="lead-1")
    ax.set_xscale("log")
    ax.set_xlabel("training rows (XSum, real)")
    ax.set_ylabel("test ROUGE-1 (500 rows, 95% interval)")
    ax.set_title("Fine-tuned adapter, greedy decoding")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(args.output)


if __name__ == "__main__":
    main()
