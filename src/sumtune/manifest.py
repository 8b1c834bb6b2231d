"""Provenance beside every artifact (config, git commit, versions, data fingerprint, prompt hash, device), and the
atomic writes every artifact goes through: a temporary path renamed into place, so a crash never leaves a file or
folder that a later stage would take for complete."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .config import ConfigError
from .layout import MANIFEST_FILE, read_json

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "rouge-score", "sumtune")
TMP_SUFFIX = ".tmp"
# A key ending in one of these names a credential (`hub_token`, `api_key`); the special tokens of a tokenizer do not.
SECRET_KEY = re.compile(r"(^|_)(token|password|passwd|secret|api_key|access_key)$", re.IGNORECASE)
SPECIAL_TOKENS = {f"{name}_token" for name in ("bos", "eos", "pad", "unk", "sep", "cls", "mask")}
HUB_TOKEN_VALUE = re.compile(r"^hf_[A-Za-z0-9]{20,}$")


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


def is_secret(key, value) -> bool:
    """A credential: a string under a key such as `hub_token` or `password`, or any string shaped like a hub token."""
    if not isinstance(value, str) or not value:
        return False
    name = str(key).lower()
    return bool(SECRET_KEY.search(name) and name not in SPECIAL_TOKENS) or bool(HUB_TOKEN_VALUE.match(value))


def redact(value):
    """Drop secrets (credentials only: see `is_secret`) from a config before it is logged or saved."""
    if isinstance(value, dict):
        return {k: "<redacted>" if is_secret(k, v) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["<redacted>" if isinstance(v, str) and HUB_TOKEN_VALUE.match(v) else redact(v) for v in value]
    return value


def training_config(training_args) -> dict:
    """TrainingArguments as JSON, with the values transformers masks as `<EOS_TOKEN>` for every `*_token` key put
    back where they are not secrets (`eos_token`, `pad_token`); `redact` then hides the real ones."""
    config = json.loads(training_args.to_json_string())
    for key, value in config.items():
        if value == f"<{key.upper()}>" and key in SPECIAL_TOKENS:
            config[key] = getattr(training_args, key, None)
    return config


def check_output_path(path: str | Path, flag: str = "--output_dir") -> None:
    """An output folder cannot be made where the path, or a folder above it, is an existing file."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = f"{flag} {path} is" if part == path else f"{flag} {path} cannot be made: {part} is"
                raise ConfigError(f"{where} an existing file, not a folder: pass a folder path (or move the file "
                                  "away).")
            return


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


def unfinished_path(path: str | Path) -> Path:
    """Where `path` is built before it is renamed into place: `path.tmp` (see stage.is_unfinished)."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through `path.tmp`, flushed to disk, then renamed: readers see all of it or nothing."""
    path = Path(path)
    tmp = unfinished_path(path)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def tmp_dir_for(path: str | Path) -> Path:
    """A fresh `path.tmp` folder to build an output in (left over from a killed run: removed first)."""
    tmp = unfinished_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def publish_dir(tmp: str | Path, path: str | Path) -> Path:
    """Rename a finished `tmp` folder to `path`, replacing an older one; no moment shows a half-written `path`."""
    tmp, path = Path(tmp), Path(path)
    if path.exists():
        old = unfinished_path(path.with_name(path.name + ".old"))
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def write_manifest(folder: str | Path, **fields) -> Path:
    """Write manifest.json into `folder` with the common provenance plus the given fields (`config` redacted)."""
    return write_manifest_file(Path(folder) / MANIFEST_FILE, **fields)


def write_manifest_file(path: str | Path, **fields) -> Path:
    """A manifest at `path`: for an output that is one file, beside it (layout.file_manifest)."""
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "python": platform.python_version(),
        "device": device_name(),
    }
    if "config" in fields:
        fields["config"] = redact(fields["config"])
    manifest |= fields
    return write_atomic(path, json.dumps(manifest, indent=2, default=str) + "\n")


def read_manifest(folder: str | Path) -> dict | None:
    return read_json(Path(folder) / MANIFEST_FILE)
