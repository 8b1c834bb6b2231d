"""Helpers for the crash, resume and bad-input tests: tiny runs of the real scripts as subprocesses."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, make_rows, write_jsonl

from sumtune.config import STAGE_SETTINGS

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
# Overrides that make the demo recipe a few-second CPU run on the tiny model; each script gets those its stage takes.
TINY_RECIPE = "recipes/tiny/demo.yaml"
TINY = {"max_length": "256", "report_to": "none", "eval_strategy": "no", "per_device_train_batch_size": "4",
        "logging_steps": "1"}


def make_data(folder: Path, train: int = 16, validation: int = 4, test: int = 4) -> Path:
    for split, n in (("train", train), ("validation", validation), ("test", test)):
        write_jsonl(folder / f"{split}.jsonl", make_rows(n, split))
    return folder


def script_args(script: str, model_dir, *argv) -> list[str]:
    argv = [str(a) for a in argv]
    own = STAGE_SETTINGS.get(script, set())
    base = [] if "--config" in argv else ["--config", TINY_RECIPE]  # a case's own recipe replaces the demo recipe
    base += [item for key, value in TINY.items() if key in own for item in (f"--{key}", value)]
    return [sys.executable, script, *base, "--model_name_or_path", str(model_dir), *argv]


def run_script(script: str, model_dir, *argv, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(script_args(script, model_dir, *argv), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def start_script(script: str, model_dir, *argv, log: Path) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115  (closed by the caller through proc.stdout)
    return subprocess.Popen(script_args(script, model_dir, *argv), cwd=ROOT, env=ENV, stdout=handle,
                            stderr=subprocess.STDOUT)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240, poll: float = 0.005) -> bool:
    """Poll until `condition()` holds (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("condition not met in time")


def checkpoint_steps(output_dir: Path) -> list[int]:
    if not output_dir.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


__all__ = ["ROOT", "ENV", "make_data", "run_script", "start_script", "wait_for", "checkpoint_steps", "jsonl",
           "load_adapter"]
