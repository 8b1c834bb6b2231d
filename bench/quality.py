"""Summary quality with real weights, through the project's own commands: zero-shot, fine-tuned (the adapter on the
4-bit base, and merge.py's model) and lead-1, on rows that training never saw. ROUGE F1 x 100 with percentile-bootstrap
95% intervals, and a paired bootstrap interval for each difference between systems (same rows, resampled together).

    python scripts/make_real_model.py                                      # outputs/models/smollm2-135m
    python bench/quality.py --recipe recipes/smollm2-135m/qlora.yaml --train-rows 1000
    python bench/quality.py ... --tune bench/quality_curve.json            # validation rows only: a sweep

Training and tuning rows come from `--train-data`, test rows from `--test-data` (different files: no test row is
ever trained or tuned on). The train file's rows are shuffled by `--split-seed`; the first `--validation-rows` are
the validation rows (tuning and eval loss), the next `--train-rows` the training rows, so a smaller training set is
a subset of a larger one with the same validation rows. A test run appends one JSON object per system to
`--results`; a tuning run appends one per setting, scored on the validation rows, to `--tuning-results`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import append_rows, run_context  # noqa: E402

from sumtune.manifest import PACKAGES  # noqa: E402
from sumtune.metrics import ROUGE_TYPES, SCORES, bootstrap_ci, rouge_per_example, summarize_scores  # noqa: E402

# The training settings for a few hundred rows (the recipe's own steps are for XSum's 204k): every row several times,
# an evaluation per epoch, no checkpoints. Chosen on the validation rows (bench/results/quality_tuning.jsonl).
DEFAULT_TRAIN_ARGS = ("--max_steps -1 --num_train_epochs 5 --eval_strategy epoch --save_strategy no "
                      "--rouge_eval_samples 0 --logging_steps 5")
SYSTEMS = ("zero_shot", "adapter", "merged", "lead")


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; pass --train-data / --test-data")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_rows(train_data: Path, test_data: Path, train_rows: int | None, validation_rows: int,
               test_rows: int | None, seed: int, folder: Path) -> dict:
    """Write folder/{train,validation,test}.jsonl and return their row counts. The train file is shuffled by `seed`:
    validation rows first, then training rows (so every training size shares one validation set); test rows are the
    first `test_rows` of the test file."""
    rows, test = read_jsonl(train_data), read_jsonl(test_data)
    available = len(rows) - validation_rows
    train_rows = available if train_rows is None else train_rows
    test_rows = len(test) if test_rows is None else test_rows
    if validation_rows < 1 or not 1 <= train_rows <= available or not 1 <= test_rows <= len(test):
        raise SystemExit(f"error: {train_data} has {len(rows)} rows and {test_data} {len(test)}; asked for "
                         f"{validation_rows} validation + {train_rows} train rows and {test_rows} test rows")
    if {row["id"] for row in rows} & {row["id"] for row in test[:test_rows]}:
        raise SystemExit(f"error: {train_data} and {test_data} share rows; test rows must be unseen")
    order = np.random.default_rng(seed).permutation(len(rows))
    parts = {"validation": [rows[i] for i in order[:validation_rows]],
             "train": [rows[i] for i in order[validation_rows:validation_rows + train_rows]],
             "test": test[:test_rows]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        # Written whole under a private name, then renamed: processes sharing the folder never read half a file.
        tmp = folder / f".{name}.jsonl.{os.getpid()}"
        tmp.write_text("".join(json.dumps(row) + "\n" for row in part), encoding="utf-8")
        os.replace(tmp, folder / f"{name}.jsonl")
    return {name: len(part) for name, part in parts.items()}


def run(command: list[str], log: Path) -> float:
    """Run one of the project's commands; its output goes to `log`. Returns the seconds it took."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        handle.write(shlex.join(command) + "\n")
        handle.flush()
        result = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"error: {shlex.join(command[:3])} ... failed (exit {result.returncode}); log {log}:\n{tail}")
    return time.perf_counter() - start


def train(args, data: Path, train_args: str, work: Path) -> tuple[Path, dict]:
    """Train once per distinct setting (runs are kept under work/runs/<hash>)."""
    key = hashlib.sha256(f"{args.recipe}|{args.model}|{data}|{train_args}".encode()).hexdigest()[:10]
    run_dir = work / "runs" / key
    info_file = run_dir / "bench_train.json"
    if info_file.is_file():
        return run_dir, json.loads(info_file.read_text())
    command = [sys.executable, "train.py", "--config", args.recipe, "--dataset_name", str(data),
               "--output_dir", str(run_dir), *model_flag(args), *shlex.split(train_args)]
    run_dir.mkdir(parents=True, exist_ok=True)
    seconds = run(command, work / f"train-{key}.log")
    history = json.loads((run_dir / "adapter" / "log_history.json").read_text())
    evals = [row["eval_loss"] for row in history if "eval_loss" in row]
    info = {"train_args": train_args, "train_seconds": round(seconds, 1),
            "steps": max((row.get("step", 0) for row in history), default=0),
            "eval_loss": [round(v, 4) for v in evals]}
    info_file.write_text(json.dumps(info) + "\n")
    return run_dir, info


def model_flag(args) -> list[str]:
    return ["--model_name_or_path", args.model] if args.model else []


def evaluate(args, system: str, data: Path, split: str, run_dir: Path | None, eval_args: str, out: Path) -> Path:
    command = [sys.executable, "evaluate.py", "--config", args.recipe, "--dataset_name", str(data),
               "--eval_split", split, "--output_dir", str(out), "--overwrite_output_dir", "true"]
    if system == "lead":
        command += ["--baseline", "lead"]
    else:
        if system == "zero_shot":
            command += [*model_flag(args), "--load_in_4bit", "false"]
        elif system == "adapter" and full_fine_tune(run_dir):
            command += ["--model_name_or_path", str(run_dir / "adapter"), "--load_in_4bit", "false"]
        elif system == "adapter":
            command += [*model_flag(args), "--adapter_path", str(run_dir / "adapter")]
        elif system == "merged":
            command += ["--model_name_or_path", str(run_dir / "merged"), "--load_in_4bit", "false"]
        command += shlex.split(eval_args)
    out.parent.mkdir(parents=True, exist_ok=True)
    run(command, out.with_suffix(".log"))
    return out


def full_fine_tune(run_dir: Path) -> bool:
    """train.py with `use_peft: false` saves the whole model where an adapter would be: it is scored as the
    "adapter" system and has nothing to merge."""
    return not (run_dir / "adapter" / "adapter_config.json").is_file()


def per_row_scores(eval_dir: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    rows = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: str(row["id"]))
    return ([str(row["id"]) for row in rows],
            rouge_per_example([row["prediction"] for row in rows], [row["reference"] for row in rows]))


def score_systems(eval_dirs: dict[str, Path], samples: int) -> dict[str, dict]:
    """Each system's ROUGE with intervals, and the paired interval of its difference to every other system."""
    scored = {name: per_row_scores(folder) for name, folder in eval_dirs.items()}
    ids = {name: ids for name, (ids, _) in scored.items()}
    if len({tuple(v) for v in ids.values()}) != 1:
        raise SystemExit("error: the systems were scored on different rows")
    results = {}
    for name, (_, scores) in scored.items():
        metrics = summarize_scores(scores, samples)
        metrics = {key: round(metrics[key], 2) for key in ROUGE_TYPES} | {
            "ci95": {key: [round(v, 2) for v in metrics["ci95"][key]] for key in ROUGE_TYPES},
            "num_rows": metrics["num_rows"]}
        metrics["minus"] = {
            other: {key: [round(float(np.mean(scores[key] - other_scores[key])), 2),
                          *(round(v, 2) for v in bootstrap_ci(scores[key] - other_scores[key], samples))]
                    for key in SCORES}
            for other, (_, other_scores) in scored.items() if other != name}
        lengths = [len(json.loads(line)["prediction"].split())
                   for line in (eval_dirs[name] / "predictions.jsonl").read_text().splitlines() if line.strip()]
        metrics["mean_words"] = round(float(np.mean(lengths)), 1)
        manifest = eval_dirs[name] / "manifest.json"
        generation = json.loads(manifest.read_text()).get("generation") if manifest.is_file() else None
        metrics["summaries_per_s"] = (generation or {}).get("summaries_per_s")
        results[name] = metrics
    return results


def common_fields(args, counts: dict) -> dict:
    return run_context(PACKAGES) | {"model": args.model or "(recipe)", "recipe": args.recipe,
            "train_data": str(args.train_data), "test_data": str(args.test_data), "split_seed": args.split_seed,
            "rows": counts,
            "note": args.note}


def table(results: dict[str, dict]) -> str:
    lines = [f"{'system':<12} " + " ".join(f"{key:>20}" for key in SCORES) + "  words"]
    for name, metrics in results.items():
        cells = [f"{metrics[key]:6.2f} [{metrics['ci95'][key][0]:5.2f},{metrics['ci95'][key][1]:6.2f}]"
                 for key in SCORES]
        lines.append(f"{name:<12} " + " ".join(f"{cell:>20}" for cell in cells) + f"  {metrics['mean_words']:5.1f}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/smollm2-135m/qlora.yaml")
    parser.add_argument("--model", default=None, help="Overrides the recipe's model_name_or_path.")
    parser.add_argument("--train-data", type=Path, default=ROOT.parent / "shared/data/xsum_nontest_3k.jsonl")
    parser.add_argument("--test-data", type=Path, default=ROOT.parent / "shared/data/xsum_test_sample_500.jsonl")
    parser.add_argument("--train-rows", type=int, default=None, help="Default: every row not used for validation.")
    parser.add_argument("--validation-rows", type=int, default=300, help="Carved from --train-data by --split-seed.")
    parser.add_argument("--test-rows", type=int, default=None, help="Default: every row of --test-data.")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--train-args", default=DEFAULT_TRAIN_ARGS, help="Extra train.py flags.")
    parser.add_argument("--eval-args", default="", help="Extra evaluate.py flags for the model systems.")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--decodings", default="",
                        help="More decodings of the adapter, scored as systems `adapter-NAME`: 'NAME=evaluate.py "
                             "flags;NAME=flags', e.g. 'mbr8=--mbr_candidates 8;beam4=--num_beams 4'.")
    parser.add_argument("--tune", type=Path, default=None,
                        help="JSON list of {name, train_args, eval_args}: train each, score on the validation rows; "
                             "or an object from training-row counts to such lists (the one for --train-rows).")
    parser.add_argument("--best-from", type=Path, default=None,
                        help="A tuning results file: take the setting with the highest validation ROUGE-1 among its "
                             "rows with this --note, and run the test with its train and eval flags.")
    parser.add_argument("--tune-shard", default="0/1",
                        help="i/n: run every n-th training setting from the i-th (n processes can share one GPU).")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs/quality")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/quality.jsonl")
    parser.add_argument("--tuning-results", type=Path, default=ROOT / "bench/results/quality_tuning.jsonl")
    parser.add_argument("--bootstrap-samples", type=int, default=2000)
    parser.add_argument("--note", default="")
    return parser.parse_args()


def tune(args, data: Path, counts: dict, work: Path) -> None:
    """Train each setting of the sweep (this process's shard of it) and score it on the validation rows."""
    index, count = (int(v) for v in args.tune_shard.split("/"))
    settings = json.loads(args.tune.read_text())
    if isinstance(settings, dict):
        if str(counts["train"]) not in settings:
            raise SystemExit(f"error: {args.tune} has settings for {sorted(settings)} training rows, "
                             f"not {counts['train']}")
        settings = settings[str(counts["train"])]
    groups = list(dict.fromkeys(setting.get("train_args", "") for setting in settings))[index::count]
    settings = [setting for setting in settings if setting.get("train_args", "") in groups]  # one training each
    for setting in settings:
        train_args = f"{DEFAULT_TRAIN_ARGS} {setting.get('train_args', '')}"
        run_dir, info = train(args, data, train_args, work)
        name = setting["name"]
        out = evaluate(args, "adapter", data, "validation", run_dir, setting.get("eval_args", ""),
                       work / "tune" / name)
        metrics = score_systems({name: out}, args.bootstrap_samples)[name]
        metrics.pop("minus")
        row = common_fields(args, counts) | {"split": "validation", "setting": name, **info,
                                             "eval_args": setting.get("eval_args", "")} | metrics
        append_rows(args.tuning_results, [row])
        print(f"{name:<28} R1 {metrics['rouge1']:6.2f} [{metrics['ci95']['rouge1'][0]:.2f}, "
              f"{metrics['ci95']['rouge1'][1]:.2f}] R2 {metrics['rouge2']:5.2f} RL {metrics['rougeL']:5.2f} "
              f"words {metrics['mean_words']:4.1f} eval_loss {info['eval_loss']} ({info['train_seconds']} s)",
              flush=True)


def test(args, data: Path, counts: dict, work: Path) -> None:
    """The test rows: train (or reuse) the chosen setting, merge, and score every system and decoding."""
    if args.best_from is not None:
        tuned = [json.loads(line) for line in args.best_from.read_text().splitlines() if line.strip()]
        tuned = [row for row in tuned if row.get("note") == args.note and row.get("split") == "validation"]
        if not tuned:
            raise SystemExit(f"error: no validation rows with note {args.note!r} in {args.best_from}")
        best = max(tuned, key=lambda row: row["rouge1"])
        args.train_args, args.eval_args = best["train_args"], f"{best['eval_args']} {args.eval_args}".strip()
        print(f"best of {len(tuned)} settings on the validation rows: {best['setting']} (ROUGE-1 {best['rouge1']})")
    systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"error: unknown --systems {unknown}; choose from {list(SYSTEMS)}")
    run_dir, info = (train(args, data, args.train_args, work) if {"adapter", "merged"} & set(systems)
                     else (None, {}))
    if "merged" in systems and full_fine_tune(run_dir):
        print("full fine-tune (use_peft false): no adapter to merge, the merged system is left out")
        systems.remove("merged")
    if "merged" in systems:
        info["merge_seconds"] = round(run([sys.executable, "merge.py", "--config", args.recipe, *model_flag(args),
                                           "--adapter_path", str(run_dir / "adapter"), "--output_dir",
                                           str(run_dir / "merged"), "--overwrite_output_dir", "true",
                                           *shlex.split(args.eval_args)],
                                          work / "merge.log"), 1)
    eval_dirs = {system: evaluate(args, system, data, "test", run_dir, args.eval_args, work / "eval" / system)
                 for system in systems}
    for variant in filter(None, args.decodings.split(";")):
        name, _, flags = variant.partition("=")
        eval_dirs[f"adapter-{name.strip()}"] = evaluate(args, "adapter", data, "test", run_dir,
                                                        f"{args.eval_args} {flags}", work / "eval" / f"adapter-{name}")
    results = score_systems(eval_dirs, args.bootstrap_samples)
    fields = common_fields(args, counts) | {"split": "test", "eval_args": args.eval_args, "decodings": args.decodings,
                                            **info}
    append_rows(args.results, [fields | {"system": name} | metrics for name, metrics in results.items()])
    print(table(results))
    for name, metrics in results.items():
        for other, diffs in metrics["minus"].items():
            if name.startswith(("adapter", "merged")) and other in ("zero_shot", "lead", "adapter"):
                d = diffs["rouge1"]
                print(f"ROUGE-1 {name} - {other}: {d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}] (paired bootstrap 95%)")
    print(f"appended {len(results)} rows to {args.results}")


def main():
    args = parse_args()
    work = args.work_dir.resolve()
    data = work / "data"
    counts = split_rows(args.train_data, args.test_data, args.train_rows, args.validation_rows, args.test_rows,
                        args.split_seed, data)
    print(f"rows: {counts}", flush=True)

    (tune if args.tune is not None else test)(args, data, counts, work)


if __name__ == "__main__":
    main()
