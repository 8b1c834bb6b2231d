"""The learning curve: would more labelled rows pay?

The recipe is trained on nested fractions of a prepared training split (one seeded shuffle of it, each size a prefix
of that order, so the 1/8 rows are inside the 1/4 rows), every size with the same validation rows, and each adapter,
on its base model, is scored on the same test rows. A saturating power law r(n) = a - b * n^(-c) (b, c > 0) fitted to
ROUGE against training rows gives a projection at 2x and 4x the largest size; its 95% interval comes from refitting on
bootstrap resamples of the test rows. Each stage runs as a subprocess of its entry script, as `make` runs them, and
each size follows the stage rule (sumtune.stage): a finished size is reused, one made with other settings refused.

    OUTPUT_DIR/curve/rows-N/   data/ (the N-row subset), train/ (train.py's output_dir), eval/, point.json (last)
    OUTPUT_DIR/curve/          curve.json (points, fits, projections, settings, provenance), curve.png
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from .config import ConfigError, RunError
from .data import is_prepared, load_prepared, prepared_stats, reuse_prepared, save_prepared
from .layout import CURVE_DIR, METRICS_FILE, read_json
from .manifest import (
    check_output_path,
    device_name,
    file_hash,
    git_commit,
    package_versions,
    read_manifest,
    rows_fingerprint,
    unfinished_path,
    write_atomic,
)
from .metrics import SCORES, rouge_per_example
from .modelcard import format_score, read_evaluation
from .report import read_rows
from .stage import reuse_or_make

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # where the entry scripts train.py and evaluate.py live
CURVE_FILE = "curve.json"
PLOT_FILE = "curve.png"
POINT_FILE = "point.json"
DEFAULT_FRACTIONS = "1/8,1/4,1/2,1"
PROJECTION = "projection"  # labels the projected lines of the printed table and the report's
FACTORS = (2, 4)  # the projection's sizes, in multiples of the largest size measured
MIN_POINTS = 3  # a three-parameter curve through fewer points is not a fit
# The exponent c is searched on this grid; for each c the model is linear in a and b. Near 0 the curve is a straight
# line in log(rows) (no ceiling in sight); at 3 it has all but reached its ceiling.
EXPONENTS = np.geomspace(1e-3, 3.0, 801)
FORMULA = "ROUGE(n) = a - b * n^(-c), b >= 0, fitted by least squares to the mean over the test rows"
INTERVAL = ("95% percentile interval of refits on bootstrap resamples of the test rows (the sizes share their test "
            "rows, so each resample draws one set of rows for all of them); training-run noise and the curve's form "
            "are not in it")


@dataclass
class CurveSpec:
    """What a learning curve is asked for: the recipe, the run folder (its data/ the source), the fractions."""

    recipe: Path
    run_dir: Path
    fractions: list[Fraction]
    data_dir: Path | None = None  # default: run_dir/data, as `make data` writes it
    seed: int = 0  # the training split's shuffle, and the bootstrap's
    model: str | None = None  # the recipe's model_name_or_path, unless given
    train_args: list[str] = field(default_factory=list)
    eval_args: list[str] = field(default_factory=list)
    bootstrap_samples: int = 1000
    overwrite: bool = False

    def __post_init__(self):
        self.recipe, self.run_dir = Path(self.recipe), Path(self.run_dir)
        self.data_dir = Path(self.data_dir) if self.data_dir else self.run_dir / "data"

    @property
    def folder(self) -> Path:
        return self.run_dir / CURVE_DIR


def parse_fractions(text: str) -> list[Fraction]:
    """`1/8,1/4,0.5,1` as fractions of the training rows, smallest first."""
    hint = "give fractions of the training rows in (0, 1], comma-separated, e.g. --fractions 1/8,1/4,1/2,1"
    try:
        fractions = [Fraction(part.strip()) for part in text.split(",")]
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--fractions {text!r} is not a list of fractions: {hint}.") from None
    outside = [str(f) for f in fractions if not 0 < f <= 1]
    if outside:
        raise ConfigError(f"--fractions {text!r}: {', '.join(outside)} is not in (0, 1]: {hint}.")
    if len(set(fractions)) < len(fractions):
        raise ConfigError(f"--fractions {text!r} names a fraction twice: {hint}.")
    return sorted(fractions)


def point_sizes(fractions: list[Fraction], train_rows: int) -> dict[int, Fraction]:
    """Training rows of each fraction (at least one row); two fractions of the same size are refused."""
    sizes: dict[int, Fraction] = {}
    for fraction in fractions:
        rows = max(1, round(fraction * train_rows))
        if rows in sizes:
            raise ConfigError(f"--fractions {sizes[rows]} and {fraction} both give {rows} of the {train_rows} "
                              "training rows: drop one, or prepare more training rows.")
        sizes[rows] = fraction
    return sizes


def check_data(data_dir: Path) -> dict:
    """The prepared data's statistics; a folder prepare_data.py did not finish is refused."""
    if not is_prepared(data_dir):
        raise ConfigError(f"{data_dir} holds no finished prepared data (train, validation and test splits from "
                          "prepare_data.py): run `make data` with the same RECIPE and OUTPUT_DIR first, or pass "
                          "--data_dir.")
    return prepared_stats(data_dir)


def curve_settings(spec: CurveSpec, stats: dict) -> dict:
    """What every size depends on: the source rows, the recipe's contents, the model and the extra flags. The
    fractions are not among them: sizes can be added to a curve, each reusing the finished ones."""
    if not spec.recipe.is_file():
        raise ConfigError(f"--config {spec.recipe} does not exist: pass the recipe the run was prepared with.")
    return {"data": {split: (stats.get(split) or {}).get("fingerprint") for split in ("train", "validation", "test")},
            "recipe_hash": file_hash(spec.recipe), "model": spec.model, "train_args": spec.train_args,
            "eval_args": spec.eval_args, "seed": spec.seed}


def shuffled_order(train_rows: int, seed: int) -> np.ndarray:
    """One seeded order of the training rows; every size takes a prefix of it, so smaller sizes nest in larger."""
    return np.random.default_rng(seed).permutation(train_rows)


def make_subset(data_dir: Path, stats: dict, order: np.ndarray, rows: int, path: Path, overwrite: bool) -> Path:
    """A prepared folder with the first `rows` training rows of `order` and the source's validation and test splits
    (reused when it holds that subset already)."""
    settings = (stats.get("settings") or {}) | {"subset": {"rows": rows, "of": stats["train"]["fingerprint"],
                                                           "order": rows_fingerprint([order[:rows].tolist()])}}
    if reuse_prepared(path, settings, overwrite):
        return path
    source = load_prepared(data_dir)
    subset = DatasetDict(source | {"train": source["train"].select(order[:rows].tolist())})
    fingerprint = rows_fingerprint({"id": r["id"], "prompt": r["prompt"], "completion": r["completion"]}
                                   for r in subset["train"])
    train_stats = {"kept": rows, "subset_of": len(source["train"]), "fingerprint": fingerprint}
    save_prepared(subset, stats | {"settings": settings, "train": train_stats}, path)
    return path


def stage_flags(spec: CurveSpec) -> list[str]:
    """The flags train.py and evaluate.py both take from a curve: the model, and a redo of every size."""
    return [*(["--model_name_or_path", spec.model] if spec.model else []),
            *(["--overwrite_output_dir", "true"] if spec.overwrite else [])]


def entry_script(name: str) -> str:
    path = ROOT / name
    if not path.is_file():
        raise ConfigError(f"{path} not found: the learning curve runs the project's entry scripts; run it from a "
                          "checkout of the repository (`pip install -e .` there).")
    return str(path)


def train_command(spec: CurveSpec, data: Path, output_dir: Path) -> list[str]:
    return [sys.executable, entry_script("train.py"), "--config", str(spec.recipe), "--output_dir", str(output_dir),
            "--dataset_name", str(data), *stage_flags(spec), *spec.train_args]


def eval_command(spec: CurveSpec, adapter: Path, output_dir: Path) -> list[str]:
    """The adapter on its base model (as it trained), on the source's test split: every size, the same rows."""
    return [sys.executable, entry_script("evaluate.py"), "--config", str(spec.recipe), "--dataset_name",
            str(spec.data_dir), "--adapter_path", str(adapter), "--output_dir", str(output_dir), *stage_flags(spec),
            *spec.eval_args]


def run_stage(command: list[str], log: Path, what: str) -> None:
    """Run one entry script with its output in `log`; its failure becomes one error naming its own `error:` line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        handle.write(shlex.join(command) + "\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        cause = next((line.removeprefix("error: ") for line in reversed(lines) if line.startswith("error: ")),
                     f"exit code {result.returncode}")
        error = ConfigError if result.returncode == 2 else RunError  # cli.run's codes: 2 is bad input
        raise error(f"{what} failed: {cause.rstrip('.')} (its log: {log}).")




def make_point(spec: CurveSpec, settings: dict, stats: dict, order: np.ndarray, rows: int) -> dict:
    """One size: its subset, training and evaluation, each run or reused; point.json, written last, marks it done."""
    folder = spec.folder / f"rows-{rows}"
    settings = settings | {"rows": rows}
    # a finished size: point.json, and the evaluation whose per-row scores the fit reads
    made_with = ((read_json(folder / POINT_FILE) or {}).get("settings")
                 if (folder / "eval" / METRICS_FILE).is_file() else None)
    if reuse_or_make(folder, f"a learning-curve point ({rows} training rows)", made_with, settings, spec.overwrite):
        return read_json(folder / POINT_FILE)["point"]
    (folder / POINT_FILE).unlink(missing_ok=True)  # until this size is finished again it reads as unfinished
    data = make_subset(spec.data_dir, stats, order, rows, folder / "data", spec.overwrite)
    logger.info("Learning curve, %d training rows: training (log: %s)", rows, folder / "train.log")
    run_stage(train_command(spec, data, folder / "train"), folder / "train.log", f"train.py for {rows} rows")
    logger.info("Learning curve, %d training rows: scoring on the test split (log: %s)", rows, folder / "eval.log")
    run_stage(eval_command(spec, folder / "train" / "adapter", folder / "eval"), folder / "eval.log",
              f"evaluate.py for {rows} rows")
    metrics = read_evaluation(f"rows-{rows}", folder / "eval").metrics
    point = {"rows": rows, "steps": (read_manifest(folder / "train" / "adapter") or {}).get("global_step"),
             **{key: metrics[key] for key in SCORES}, "ci95": {key: metrics["ci95"][key] for key in SCORES},
             "test_rows": metrics["num_rows"], "eval_dir": str(folder / "eval")}
    write_atomic(folder / POINT_FILE, json.dumps({"settings": settings, "point": point}, indent=2) + "\n")
    return point


def per_row_scores(eval_dirs: list[Path]) -> dict[str, np.ndarray]:
    """ROUGE of every test row for every size, rows in one order: {type: array (sizes, rows)}."""
    tables, ids = [], None
    for folder in eval_dirs:
        rows = sorted(read_rows(read_evaluation(folder.parent.name, folder)), key=lambda row: str(row["id"]))
        if ids is not None and [str(row["id"]) for row in rows] != ids:
            raise ConfigError(f"{folder} scored other test rows than {eval_dirs[0]}: pass --overwrite_output_dir "
                              "true to score every size again on the same rows.")
        ids = [str(row["id"]) for row in rows]
        tables.append(rouge_per_example([row["prediction"] for row in rows], [row["reference"] for row in rows]))
    return {key: np.stack([table[key] for table in tables]) for key in SCORES}


def fit_curves(rows: np.ndarray, means: np.ndarray) -> dict[str, np.ndarray]:
    """Least-squares fits of r(n) = a - b * n^(-c) with b >= 0 to each line of `means` (fits x sizes). For each c of
    the grid the model is linear in a and b (closed form; b below 0 is clipped to the flat fit b = 0); the c with the
    least squared error is kept. Returns arrays a, b, c (one value per fit)."""
    x = np.asarray(rows, float)[None, :] ** -EXPONENTS[:, None]  # (grid, sizes)
    y = np.asarray(means, float)[:, None, :]  # (fits, 1, sizes)
    x_dev = x - x.mean(-1, keepdims=True)
    slope = (x_dev * (y - y.mean(-1, keepdims=True))).sum(-1) / (x_dev**2).sum(-1)  # (fits, grid)
    b = np.maximum(-slope, 0.0)
    a = y.mean(-1) + b * x.mean(-1)
    errors = ((y - (a[..., None] - b[..., None] * x)) ** 2).sum(-1)
    best = errors.argmin(-1)[:, None]
    return {"a": np.take_along_axis(a, best, 1)[:, 0], "b": np.take_along_axis(b, best, 1)[:, 0],
            "c": EXPONENTS[best[:, 0]]}


def value_at(fit: dict, rows):
    """The fitted curve at `rows` (a number or an array), for one fit or an array of them."""
    return fit["a"] - fit["b"] * np.power(np.asarray(rows, float), -np.asarray(fit["c"], float))


def resampled_means(scores: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Each size's mean over `samples` bootstrap resamples of the test rows, the same rows for every size in a
    resample: (samples, sizes)."""
    rng = np.random.default_rng(seed)
    means = np.empty((samples, scores.shape[0]))
    for start in range(0, samples, 100):  # chunks keep the index matrix small for large test sets
        stop = min(start + 100, samples)
        idx = rng.integers(0, scores.shape[1], size=(stop - start, scores.shape[1]))
        means[start:stop] = scores[:, idx].mean(-1).T
    return means


def project(rows: list[int], scores: np.ndarray, samples: int = 1000, seed: int = 0) -> dict:
    """The fit to one ROUGE type's per-row scores (sizes x test rows) and its projections at FACTORS x the largest
    size with 95% intervals; or, where no fit is possible, `fit` None and the `reason`."""
    rows_ = np.asarray(rows, float)
    means = scores.mean(-1)
    if len(rows) < MIN_POINTS:
        return {"fit": None, "reason": f"{len(rows)} sizes measured; a fit of the curve's 3 parameters needs at "
                                       f"least {MIN_POINTS} (add fractions, e.g. --fractions {DEFAULT_FRACTIONS})"}
    fit = {key: float(value[0]) for key, value in fit_curves(rows_, means[None]).items()}
    if fit["b"] <= 0 or means[np.argmax(rows_)] <= means[np.argmin(rows_)]:
        return {"fit": None, "reason": "ROUGE does not rise with the training rows here, so no rising curve fits; "
                                       "measured points only"}
    boot = fit_curves(rows_, resampled_means(scores, samples, seed))
    projections = []
    for factor in FACTORS:
        target = int(factor * rows_.max())
        low, high = np.percentile(value_at(boot, target), [2.5, 97.5])
        projections.append({"factor": factor, "rows": target, "value": round(float(value_at(fit, target)), 2),
                            "ci95": [round(float(low), 2), round(float(high), 2)]})
    fit["ceiling_in_sight"] = bool(fit["c"] > EXPONENTS[0])  # at the grid's end: a straight line in log(rows)
    return {"fit": fit, "projections": projections}


def build_curve(spec: CurveSpec, settings: dict, sizes: dict[int, Fraction], points: list[dict]) -> dict:
    scores = per_row_scores([Path(point["eval_dir"]) for point in points])
    rows = [point["rows"] for point in points]
    return {
        "points": [point | {"fraction": str(sizes[point["rows"]])} for point in points],
        "projection": {key: project(rows, scores[key], spec.bootstrap_samples, spec.seed) for key in SCORES},
        "formula": FORMULA, "interval": INTERVAL,
        "recipe": str(spec.recipe), "data_dir": str(spec.data_dir), "fractions": [str(f) for f in sizes.values()],
        "bootstrap_samples": spec.bootstrap_samples, "settings": settings,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
        "versions": package_versions(), "device": device_name(),
    }


def run_curve(spec: CurveSpec) -> dict:
    """Every size of the curve (made, or reused when finished), then the fit, curve.json and curve.png."""
    stats = check_data(spec.data_dir)
    settings = curve_settings(spec, stats)
    check_output_path(spec.folder)
    made_with = (read_json(spec.folder / CURVE_FILE) or {}).get("settings")
    reuse_or_make(spec.folder, "a learning curve", made_with, settings, spec.overwrite)
    sizes = point_sizes(spec.fractions, stats["train"]["kept"])
    order = shuffled_order(stats["train"]["kept"], spec.seed)
    spec.folder.mkdir(parents=True, exist_ok=True)
    (spec.folder / CURVE_FILE).unlink(missing_ok=True)  # the curve reads as finished only once every size is
    points = [make_point(spec, settings, stats, order, rows) for rows in sizes]
    curve = build_curve(spec, settings, sizes, points)
    tmp = unfinished_path(spec.folder / PLOT_FILE)
    plot_curve(curve, tmp)
    os.replace(tmp, spec.folder / PLOT_FILE)
    write_atomic(spec.folder / CURVE_FILE, json.dumps(curve, indent=2) + "\n")
    return curve


def read_curve(run_dir: str | Path) -> dict | None:
    """A run's finished learning curve, None when it has none."""
    path = Path(run_dir) / CURVE_DIR / CURVE_FILE
    if not path.is_file():
        return None
    curve = read_json(path)
    if curve is None or "points" not in curve:
        raise ConfigError(f"{path} is unreadable: run `make curve` again.")
    return curve


def plot_curve(curve: dict, path: Path, key: str = "rouge1") -> None:
    """The measured points with their intervals, the fitted curve, and the projection, drawn as one."""
    from matplotlib.figure import Figure

    points, result = curve["points"], curve["projection"][key]
    rows = np.array([p["rows"] for p in points], float)
    means = np.array([p[key] for p in points])
    bounds = np.array([p["ci95"][key] for p in points])
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(rows, means, yerr=[means - bounds[:, 0], bounds[:, 1] - means], fmt="o", capsize=3,
                label="measured (95% interval)")
    if result["fit"] is not None:
        projected = result["projections"]
        grid = np.geomspace(rows.min(), projected[-1]["rows"], 200)
        inside = grid <= rows.max()
        ax.plot(grid[inside], value_at(result["fit"], grid[inside]), "-", color="C0", alpha=0.6,
                label="fit: a - b * rows^(-c)")
        ax.plot(grid[~inside], value_at(result["fit"], grid[~inside]), "--", color="C1", alpha=0.7)
        values = np.array([p["value"] for p in projected])
        ci = np.array([p["ci95"] for p in projected])
        ax.errorbar([p["rows"] for p in projected], values, yerr=[values - ci[:, 0], ci[:, 1] - values], fmt="s",
                    mfc="none", color="C1", capsize=3, label="projection at 2x, 4x the rows (95% interval)")
    else:
        ax.text(0.02, 0.03, f"no projection: {result['reason']}", transform=ax.transAxes, fontsize=7, wrap=True)
    ax.set_xscale("log")
    ticks = sorted({*rows.astype(int).tolist(), *(p["rows"] for p in result.get("projections", []))})
    ax.set_xticks(ticks, [str(tick) for tick in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set(xlabel="training rows", ylabel=f"test {SCORES[key]} (F1 x 100)",
           title=f"Learning curve: {SCORES[key]} against training rows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, format="png")


def _projection_cells(curve: dict, index: int) -> list[str]:
    cells = []
    for key in SCORES:
        result = curve["projection"][key]
        if result["fit"] is None:
            cells.append("–")
        else:
            p = result["projections"][index]
            cells.append(f"{p['value']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]")
    return cells


def curve_rows(curve: dict) -> list[list[str]]:
    """The table's lines as cells: what the line is (measured or projection), rows, fraction, steps and each ROUGE
    type; the projection lines last."""
    lines = [["measured", str(p["rows"]), p["fraction"], str(p.get("steps") or "–"),
              *(format_score(p, key) for key in SCORES)] for p in curve["points"]]
    largest = max(p["rows"] for p in curve["points"])
    for index, factor in enumerate(FACTORS):
        lines.append([PROJECTION, str(factor * largest), f"{factor}x", "–", *_projection_cells(curve, index)])
    return lines


def curve_notes(curve: dict) -> list[str]:
    """What the projection is, or why there is none, per ROUGE type."""
    notes = [f"Projection: {curve['formula']}; interval: {curve['interval']}."]
    for key, result in curve["projection"].items():
        if result["fit"] is None:
            notes.append(f"{SCORES[key]} projection not possible: {result['reason']}.")
        elif not result["fit"]["ceiling_in_sight"]:
            notes.append(f"{SCORES[key]}: the measured points bend towards no ceiling yet; the projection extends "
                         "their straight line in log(rows), the optimistic end of the fitted family.")
    return notes


def format_curve(curve: dict) -> str:
    """The printed table: the measured points, then the projection lines, labelled as such."""
    header = ["", "rows", "fraction", "steps", *SCORES.values()]
    lines = [header, *curve_rows(curve)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    test_rows = curve["points"][0]["test_rows"]
    text = [f"Learning curve: ROUGE F1 x 100 on {test_rows} test rows [95% interval]"]
    text += ["  ".join([line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in
                                                     zip(line[1:], widths[1:], strict=True)]) for line in lines]
    return "\n".join(text + curve_notes(curve))


def curve_markdown(curve: dict) -> list[str]:
    """The report's section: the table, the notes and the plot (curve.png beside report.md)."""
    test_rows = curve["points"][0]["test_rows"]
    lines = ["## Learning curve", "",
             f"The recipe trained on nested fractions of the training rows (the same validation rows), each adapter "
             f"scored on the same {test_rows} test rows: ROUGE F1 x 100 [95% interval]. The last two lines are a "
             "**projection** from the fitted curve, not a measurement.", "",
             "| | training rows | fraction | steps | " + " | ".join(SCORES.values()) + " |",
             "| --- | ---: | --- | ---: | " + " | ".join("---" for _ in SCORES) + " |"]
    for cells in curve_rows(curve):
        if cells[0] == PROJECTION:
            cells = [f"**{PROJECTION}**", *cells[1:4], *(f"*{cell}*" for cell in cells[4:])]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", *curve_notes(curve), "", "![Learning curve with the projection](curve.png)", ""]
