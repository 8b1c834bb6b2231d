"""The run report: training curves, ROUGE of each evaluated system with its interval, summary lengths and example
summaries, as `report.md` with PNG plots in OUTPUT_DIR/report/, and the learning curve when `make curve` made one; the
same step puts the scores into the model cards.

Plots are drawn on `matplotlib.figure.Figure` objects and saved through the Agg canvas, so no display or pyplot
state is involved.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .config import ConfigError
from .data import is_prepared, load_prepared
from .layout import ADAPTER_DIR, LOG_HISTORY_FILE, MERGED_DIR, PREDICTIONS_FILE, REPORT_DIR, read_json
from .manifest import publish_dir, read_manifest, tmp_dir_for, write_atomic
from .metrics import rouge_per_example
from .modelcard import (
    SCORES,
    Evaluation,
    evaluation_of,
    read_evaluation,
    scores_table,
    source_dataset,
    training_figures,
    write_model_card,
)

logger = logging.getLogger(__name__)

ARTICLE_START = 400  # characters of the article shown beside each example


def parse_pairs(pairs: list[str]) -> list[Evaluation]:
    """`NAME=EVAL_DIR` arguments (as scripts/compare.py takes them) read into evaluations, in the order given."""
    evaluations, names = [], set()
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"{pair!r} is not NAME=EVAL_DIR: name each evaluation folder, e.g. "
                              "finetuned=outputs/demo/eval/merged.")
        if name in names:
            raise ConfigError(f"The name {name!r} is given twice: give each evaluation its own name.")
        names.add(name)
        evaluations.append(read_evaluation(name, folder))
    return evaluations


def read_rows(ev: Evaluation) -> list[dict]:
    path = ev.folder / PREDICTIONS_FILE
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is missing or unreadable: re-run that evaluation.") from None


def load_history(run_dir: Path) -> list[dict]:
    """The trainer's log history saved beside the adapter (merge.py copies it beside the merged model)."""
    for folder in (ADAPTER_DIR, MERGED_DIR):
        history = read_json(run_dir / folder / LOG_HISTORY_FILE)
        if history is not None:
            return history
    return []


def plot_training(history: list[dict], path: Path) -> bool:
    """Training and validation loss over steps, and validation ROUGE when it was logged; False if nothing was."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    train = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
    val = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    rouge = {key: [(e["step"], e[f"eval_{key}"]) for e in history if f"eval_{key}" in e] for key in SCORES}
    rouge = {key: points for key, points in rouge.items() if points}
    if not train and not val:
        return False
    fig = Figure(figsize=(11 if rouge else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if rouge else 1, squeeze=False)[0]
    if train:
        axes[0].plot(*zip(*train, strict=True), label="training loss")
    if val:
        axes[0].plot(*zip(*val, strict=True), "o-", label="validation loss")
    axes[0].set(xlabel="optimizer step", ylabel="loss", title="Loss")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    if rouge:
        for key, points in rouge.items():
            axes[1].plot(*zip(*points, strict=True), "o-", label=SCORES[key])
        axes[1].set(xlabel="optimizer step", ylabel="F1 x 100", title="Validation ROUGE (fixed subset)")
        axes[1].legend()
        axes[1].grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    return True


def plot_scores(evaluations: list[Evaluation], path: Path) -> None:
    """ROUGE-1/2/L bars per system with 95% interval whiskers."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(evaluations)
    x = np.arange(len(SCORES))
    for i, ev in enumerate(evaluations):
        means = np.array([ev.metrics[key] for key in SCORES])
        lows = np.array([ev.metrics["ci95"][key][0] for key in SCORES])
        highs = np.array([ev.metrics["ci95"][key][1] for key in SCORES])
        bars = ax.bar(x + (i - (len(evaluations) - 1) / 2) * width, means, width, label=ev.name,
                      yerr=[np.maximum(means - lows, 0), np.maximum(highs - means, 0)], capsize=3)
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.set_xticks(x, list(SCORES.values()))
    ax.set(ylabel="F1 x 100", title=f"ROUGE on the {evaluations[0].split} split (whiskers: 95% interval)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)


def word_count(text: str) -> int:
    return len(text.split())


def plot_lengths(rows: dict[str, list[dict]], path: Path) -> None:
    """Histograms of summary length in words: the references against each system's predictions."""
    from matplotlib.figure import Figure

    references = [word_count(r["reference"]) for r in next(iter(rows.values()))]
    predictions = {name: [word_count(r["prediction"]) for r in system] for name, system in rows.items()}
    longest = max([*references, *(n for lengths in predictions.values() for n in lengths), 1])
    bins = np.arange(0, longest + 2) - 0.5 if longest <= 60 else 30
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.hist(references, bins=bins, color="0.75", label="references")
    for name, lengths in predictions.items():
        ax.hist(lengths, bins=bins, histtype="step", linewidth=1.8, label=name)
    ax.set(xlabel="words", ylabel="summaries", title="Summary length")
    ax.legend()
    fig.savefig(path, dpi=120)


def articles(ev: Evaluation) -> dict[str, str]:
    """Row id -> article of the split that was scored, when it is a prepared folder on this machine."""
    if not ev.dataset or not is_prepared(ev.dataset):
        return {}
    try:
        split = load_prepared(ev.dataset)[ev.split]
    except (ConfigError, KeyError):
        return {}
    return {str(i): doc for i, doc in zip(split["id"], split["document"], strict=True)}


def pick_examples(rows: list[dict]) -> list[tuple[str, dict, float]]:
    """The best, median and worst prediction by ROUGE-L (the median by rank), each with its score."""
    scores = rouge_per_example([r["prediction"] for r in rows], [r["reference"] for r in rows])["rougeL"]
    order = np.argsort(-scores, kind="stable")
    picks = [("Best", order[0]), ("Median", order[len(order) // 2]), ("Worst", order[-1])]
    return [(label, rows[i], float(scores[i])) for label, i in picks]


def _quote(text: str) -> str:
    return "> " + " ".join(text.split())


def _examples_md(model: Evaluation, rows: list[dict], documents: dict[str, str]) -> list[str]:
    lines = [f"## Examples: `{model.name}`, by ROUGE-L", ""]
    for label, row, score in pick_examples(rows):
        lines += [f"### {label} (ROUGE-L {score:.1f}, id `{row.get('id')}`)", ""]
        document = documents.get(str(row.get("id")))
        if document is not None:
            start = document if len(document) <= ARTICLE_START else document[:ARTICLE_START].rsplit(" ", 1)[0] + " …"
            lines += ["**Article** (start):", "", _quote(start), ""]
        lines += ["**Reference:**", "", _quote(row["reference"]), "", "**Prediction:**", "",
                  _quote(row["prediction"] or "(empty)"), ""]
    return lines


def curve_section(run_dir: Path, output_dir: Path) -> list[str]:
    """The learning curve's table, projection and plot (`make curve`), when the run has a finished one."""
    from .curve import curve_markdown, plot_curve, read_curve  # curve.py reads evaluations through this module

    curve = read_curve(run_dir)
    if curve is None:
        return []
    plot_curve(curve, output_dir / "curve.png")
    return curve_markdown(curve)


def write_report(run_dir: str | Path, evaluations: list[Evaluation], output_dir: str | Path | None = None) -> Path:
    """Write report.md and its plots to `output_dir` (default RUN_DIR/report) through a temporary folder, and
    rewrite the adapter's and merged model's cards with the scores; returns the report's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--run_dir {run_dir} does not exist: pass train.py's --output_dir (it holds adapter/ and "
                          "merged/).")
    if not evaluations:
        raise ConfigError("No evaluation given: pass NAME=EVAL_DIR pairs, e.g. finetuned=OUTPUT_DIR/eval/merged.")
    output_dir = Path(output_dir) if output_dir else run_dir / REPORT_DIR
    adapter, merged = run_dir / ADAPTER_DIR, run_dir / MERGED_DIR
    model = (evaluation_of(merged, evaluations) or evaluation_of(adapter, evaluations)
             or next((ev for ev in evaluations if ev.metrics.get("mode") == "model"), evaluations[0]))
    rows = {ev.name: read_rows(ev) for ev in evaluations}
    history = load_history(run_dir)
    manifest = read_manifest(adapter) or {}
    config = manifest.get("config") or {}

    tmp = tmp_dir_for(output_dir)
    tmp.mkdir()
    has_curves = plot_training(history, tmp / "training.png")
    plot_scores(evaluations, tmp / "scores.png")
    plot_lengths(rows, tmp / "lengths.png")

    base = manifest.get("base_model") or (config.get("model") or {}).get("model_name_or_path")
    dataset = source_dataset(manifest.get("dataset")) or source_dataset(model.dataset)
    lines = [f"# Run report: {run_dir.name}", ""]
    if base:
        lines += [f"`{base}` fine-tuned on `{dataset}` ({manifest.get('global_step', '?')} optimizer steps). "
                  f"Adapter: `{adapter}`; merged model: `{merged}`; the model cards in both folders hold these "
                  "scores.", ""]
    lines += ["## Scores", "",
              f"ROUGE F1 x 100 (Porter stemmer) on the `{model.split}` split of `{source_dataset(model.dataset)}`; "
              "brackets: 95% bootstrap interval of the mean.", "", scores_table(evaluations), "",
              "![ROUGE per system](scores.png)", ""]
    lines += curve_section(run_dir, tmp)
    lines += ["## Training", ""]
    if has_curves:
        lines += ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in training_figures(history).items()), "",
                  "![Training curves](training.png)", ""]
    else:
        lines += [f"No training log found in `{adapter}` (log_history.json).", ""]
    references = [word_count(r["reference"]) for r in rows[model.name]]
    medians = ", ".join(f"{name} {np.median([word_count(r['prediction']) for r in system]):.0f}"
                        for name, system in rows.items())
    lines += ["## Summary lengths", "", f"Median words per summary: references {np.median(references):.0f}, "
              f"{medians}.", "", "![Summary lengths](lengths.png)", ""]
    lines += _examples_md(model, rows[model.name], articles(model))
    write_atomic(tmp / "report.md", "\n".join(lines))
    publish_dir(tmp, output_dir)

    for folder, kind in ((adapter, "adapter"), (merged, "merged")):
        if read_manifest(folder) is not None:
            write_model_card(folder, kind, evaluations=evaluations)
    return output_dir / "report.md"
