"""Provenance written beside every artifact: config, git commit, package versions, device, prompt hash."""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .prompts import template_hash

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "rouge-score")
MANIFEST_FILE = "manifest.json"


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"cpu ({platform.processor() or platform.machine()})"


def write_manifest(folder: str | Path, **fields) -> Path:
    """Write manifest.json into `folder` with the common provenance plus the given fields."""
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "python": platform.python_version(),
        "device": device_name(),
    }
    template = fields.pop("chat_template", None)
    instruction = fields.pop("instruction", None)
    if template is not None and instruction is not None:
        manifest["prompt_hash"] = template_hash(template, instruction)
    manifest |= fields
    path = Path(folder) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return path
