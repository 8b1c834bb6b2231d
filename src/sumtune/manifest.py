"""Provenance beside every artifact (config, git commit, versions, data fingerprint, prompt hash, device), and the
atomic writes every artifact goes through: a temporary path renamed into place, so a crash never leaves a file or
folder that a later stage would take for complete."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .prompts import template_hash

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "rouge-score", "sumtune")
MANIFEST_FILE = "manifest.json"
TMP_SUFFIX = ".tmp"
SECRET_KEYS = ("token", "password", "secret")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each named distribution, None where it is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """HEAD of the checkout the code runs from, with `-dirty` when tracked files differ from it."""
    cwd = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    if not commit:
        return None
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"cpu ({platform.processor() or platform.machine()})"


def redact(value):
    """Drop secrets (any key naming a token, password or secret) from a config before it is logged or saved."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if v and any(s in str(k).lower() for s in SECRET_KEYS)
                    and isinstance(v, str) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def rows_fingerprint(rows) -> str:
    """A content hash of dataset rows (any iterable of JSON-serialisable dicts): equal data, equal fingerprint."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through `path.tmp`, flushed to disk, then renamed: readers see all of it or nothing."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def tmp_dir_for(path: str | Path) -> Path:
    """A fresh `path.tmp` folder to build an output in (left over from a killed run: removed first)."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def publish_dir(tmp: str | Path, path: str | Path) -> Path:
    """Rename a finished `tmp` folder to `path`, replacing an older one; no moment shows a half-written `path`."""
    tmp, path = Path(tmp), Path(path)
    if path.exists():
        old = path.with_name(path.name + ".old" + TMP_SUFFIX)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def write_manifest(folder: str | Path, **fields) -> Path:
    """Write manifest.json into `folder` with the common provenance plus the given fields.

    `chat_template` and `instruction` are replaced by their hash (`prompt_hash`); `config` is redacted.
    """
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
    if "config" in fields:
        fields["config"] = redact(fields["config"])
    manifest |= fields
    return write_atomic(Path(folder) / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str) + "\n")


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(folder) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
