"""Data-parallel evaluation: `evaluate.py` on one GPU, then under `accelerate launch` on N GPUs, same rows and model.

One invocation builds a Phi-2-shaped random-weight bf16 model (config and tokenizer from --assets) and an XSum-like
test file (the 500-row sample repeated --repeat times, ids made unique), runs the real `evaluate.py` once with one
process and once with --gpus processes, and appends one JSON object per run to --results:
summaries/s from the run's own manifest (`generation`: wall time from every model loaded to the last row), whether the
predictions file holds every row exactly once in dataset order, and the share of rows equal to the 1-process run's.
--recheck then runs the 1-process evaluation again on GPU 0 and on GPU 1: how much of the N-process mismatch is
run-to-run variation, how much the other GPU. The figures: docs/performance.md.

    python bench/eval_data_parallel.py --assets .device_assets --gpus 2          # on a machine with 2 GPUs
    python bench/eval_data_parallel.py --assets ../shared --tiny --rows 24 --results /tmp/e.jsonl   # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import append_rows, run_context, sample_file, save_random_phi

ROOT = Path(__file__).resolve().parents[1]


def build(assets: Path, work: Path, repeat: int, rows: int | None, tiny: bool) -> tuple[Path, Path]:
    """The random-weight model (bf16 on a GPU, float32 for the CPU smoke test) and the repeated sample."""
    import torch

    model_dir, data_dir = work / "model", work / "data"
    if not (model_dir / "config.json").is_file():
        save_random_phi(assets, model_dir, tiny, torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    sample = [json.loads(line) for line in sample_file(assets).read_text(encoding="utf-8").splitlines()
              if line.strip()]
    out = [{"id": f"{r['id']}-{k}", "document": r["document"], "summary": r["summary"]}
           for k in range(repeat) for r in sample][:rows]
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
    return model_dir, data_dir


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default=".device_assets", help="folder with phi-2/ and xsum_test_sample_500.jsonl")
    p.add_argument("--work", default="/tmp/sumtune-eval-dp")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--repeat", type=int, default=6, help="copies of the 500-row sample (6: 3,000 rows)")
    p.add_argument("--rows", type=int, help="cut the test file to this many rows")
    p.add_argument("--new-tokens", type=int, default=26)
    p.add_argument("--max-batch-tokens", type=int, default=65536, help="generation_max_batch_tokens")
    p.add_argument("--batch-size", type=int, default=256, help="generation_batch_size (most rows in a batch)")
    p.add_argument("--results", default="bench/results/generate_throughput.jsonl")
    p.add_argument("--tiny", action="store_true", help="2-layer model on CPU processes (smoke test)")
    p.add_argument("--recheck", action="store_true", help="then 1 process again, on GPU 0 and on GPU 1")
    return p.parse_args()


def evaluation_runs(opts, model_dir: Path, data_dir: Path) -> dict[str, tuple[int, str | None, list[str]]]:
    """name -> (processes, visible GPUs or None for all, argv): one process, --gpus processes, and the rechecks."""
    common = ["evaluate.py", "--config", "recipes/phi-2/qlora.yaml", "--model_name_or_path", str(model_dir),
              "--dataset_name", str(data_dir), "--load_in_4bit", "false", "--max_new_tokens", str(opts.new_tokens),
              "--generation_max_batch_tokens", str(opts.max_batch_tokens), "--bootstrap_samples", "10",
              "--generation_batch_size", str(opts.batch_size),
              "--report_to", "none", "--overwrite_output_dir", "true"]
    if opts.tiny:
        common += ["--dtype", "float32", "--bf16", "false"]
    config = "accelerate_configs/multi_cpu.yaml" if opts.tiny else "accelerate_configs/multi_gpu.yaml"
    runs = {
        "1": (1, None, [sys.executable, *common]),
        str(opts.gpus): (opts.gpus, None, [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes",
            str(opts.gpus), "--main_process_port", "29650", *common, *(["--use_cpu", "true"] if opts.tiny else [])]),
    }
    if opts.recheck:
        runs |= {f"1-again-gpu{g}": (1, str(g), [sys.executable, *common]) for g in range(min(2, opts.gpus))}
    return runs


def evaluate(name: str, visible: str | None, argv: list[str], work: Path) -> tuple[dict, list[dict], float]:
    """Run evaluate.py once: its manifest, its prediction rows and the wall seconds."""
    out = work / f"out-{name}"
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    start = time.time()
    proc = subprocess.run([*argv, "--output_dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    (work / f"eval-{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{name}-process evaluation failed (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return manifest, preds, time.time() - start


def main() -> None:
    opts = parse_args()
    work = Path(opts.work)
    model_dir, data_dir = build(Path(opts.assets), work, opts.repeat, opts.rows, opts.tiny)
    ids = [json.loads(line)["id"] for line in (data_dir / "test.jsonl").read_text().splitlines()]
    context = run_context(("torch", "transformers", "accelerate"))
    predictions, rows = {}, []
    for name, (gpus, visible, argv) in evaluation_runs(opts, model_dir, data_dir).items():
        manifest, preds, wall = evaluate(name, visible, argv, work)
        predictions[name] = [r["prediction"] for r in preds]
        one = predictions["1"]
        where = "" if visible is None else f", again, GPU {visible} only"
        row = {"variant": f"sumtune evaluate.py, bf16, {gpus} process(es){where}", "stock": False,
               "device": context["device"], "gpus": gpus, "visible_gpus": visible, "date": context["date"],
               "versions": context["versions"], "rows": len(ids), "new_tokens": opts.new_tokens,
               "max_batch_tokens": opts.max_batch_tokens, "batch_size": opts.batch_size,
               "summaries_per_s": manifest["generation"]["summaries_per_s"],
               "generation_seconds": manifest["generation"]["seconds"], "wall_s": round(wall, 1),
               "every_row_once_in_order": [r["id"] for r in preds] == ids,
               "match_rate": sum(a == b for a, b in zip(predictions[name], one, strict=True)) / len(one),
               "match_reference": "the 1-process run", "peak_gib": None, "command": context["command"]}
        rows.append(row)
        print(f"{name} process(es){where}: {row['summaries_per_s']} summaries/s over {len(ids)} rows, every row "
              f"once in order: {row['every_row_once_in_order']}, same as 1 process: {row['match_rate']:.1%}",
              flush=True)
    rows[1]["speedup_vs_1"] = round(rows[1]["summaries_per_s"] / rows[0]["summaries_per_s"], 2)
    print(f"speed-up {opts.gpus} vs 1: {rows[1]['speedup_vs_1']}x")
    append_rows(opts.results, rows)


if __name__ == "__main__":
    main()
