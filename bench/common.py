"""What the speed benchmarks share: the context every result row records (device, versions, date, command), appending
rows to a results file, timing on the device, and the Phi-2-shaped random-weight model and XSum sample they run on.

Random weights cost the same time and memory as Phi-2's real checkpoint, so the benches need only its config and
tokenizer (`--assets`), not its 5.6 GB of weights.
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
import time
from pathlib import Path

SAMPLE = "xsum_test_sample_500.jsonl"
# The CPU smoke tests' stand-in: two small layers of Phi-2's architecture, enough to run every code path.
TINY_PHI = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
            "num_key_value_heads": 4}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_context(packages: tuple[str, ...]) -> dict:
    """The fields every result row carries, so a row can be compared and rerun on its own: the device
    (`sumtune.manifest.device_name`), the named packages' versions, the UTC date and the exact command."""
    from sumtune.manifest import device_name, package_versions

    return {"device": device_name(), "versions": package_versions(packages),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python " + shlex.join(sys.argv)}


def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append one JSON object a line: results files only grow, each run's rows after the earlier runs'."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def sample_file(assets: Path) -> Path:
    """The 500-row XSum sample in `assets`, directly or under data/ (as ../shared holds it)."""
    for path in (assets / SAMPLE, assets / "data" / SAMPLE):
        if path.is_file():
            return path
    sys.exit(f"error: no {SAMPLE} in {assets} or {assets / 'data'}; pass --assets with the folder that holds it")


def save_random_phi(assets: Path, folder: Path, tiny: bool, dtype) -> None:
    """Phi-2's architecture from `assets`/phi-2 (or TINY_PHI's shape) with random weights, seed 0, saved with
    Phi-2's tokenizer. Initialised on the GPU when there is one: on the host's CPU it is the slow part of a build."""
    import torch
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    config = PhiConfig.from_pretrained(assets / "phi-2")
    if tiny:
        config.update(TINY_PHI)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = PhiForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(assets / "phi-2").save_pretrained(folder)
    del model
    if torch.cuda.is_available():  # the variants run in child processes: leave them the whole card
        torch.cuda.empty_cache()


def synchronize(device: str) -> None:
    """Wait for the device's queued kernels, so a clock read after it counts them."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(device: str, fn):
    """fn() on an empty allocator cache: its result, wall seconds and, on CUDA, its peak memory in GiB."""
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    memory = {}
    if device == "cuda":
        memory = {"peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                  "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
    return result, seconds, memory
