"""Predictions made so far, kept crash-safe: one append-only partial file per process, headed by the settings that
made them, and read back after a kill (a last line cut short is dropped) whatever number of processes wrote them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import ConfigError
from .layout import PARTIAL_PREDICTIONS_FILE as PARTIAL_FILE
from .stage import refusal, settings_changes

PARTIAL_PREFIX = "predictions.partial"


def partial_path(output_dir: Path, rank: int) -> Path:
    """The file process `rank` appends to: PARTIAL_FILE for rank 0 and a single process."""
    return output_dir / (PARTIAL_FILE if rank == 0 else f"{PARTIAL_PREFIX}.rank{rank}.jsonl")


def partial_files(output_dir: Path) -> list[Path]:
    """Every partial file in output_dir, whatever number of processes wrote them."""
    return sorted(output_dir.glob(f"{PARTIAL_PREFIX}*.jsonl"))


def read_partial(path: Path, run_key: dict, ids: list[str]) -> tuple[dict[int, str] | None, int]:
    """(predictions by row index, bytes of the whole lines that hold them); None when made with other settings.

    Reads only. The first line holds the settings; a last line cut short by a kill ends the good part.
    """
    data = path.read_bytes()
    if b"\n" not in data:  # killed before its first line was flushed: nothing made yet
        return {}, 0
    lines = data.split(b"\n")
    made_with = _header(lines[0])
    if made_with is None or settings_changes(made_with, run_key):
        return None, 0
    done, good = {}, len(lines[0]) + 1
    for raw in lines[1:]:
        try:
            row = json.loads(raw)
            index = int(row["index"])
            if index < 0 or ids[index] != row["id"] or not isinstance(row["prediction"], str):
                raise ValueError
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError, ValueError):
            break  # the line the kill cut short: everything after it is gone too
        done.setdefault(index, row["prediction"])
        good += len(raw) + 1
    return done, good


def _header(line: bytes) -> dict | None:
    """The settings a partial file's first line records; None when it records none."""
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    run_key = header.get("run_key") if isinstance(header, dict) else None
    return run_key if isinstance(run_key, dict) else None


def stale_partial(path: Path, run_key: dict, flag: str = "--output_dir") -> ConfigError:
    """The error for a partial file made with other settings than `run_key`."""
    with path.open("rb") as handle:
        made_with = _header(handle.readline())
    return refusal(path, "predictions", made_with or {}, run_key, flag, resumable=True)


def load_partial(path: Path, run_key: dict, ids: list[str], overwrite: bool,
                 flag: str = "--output_dir") -> dict[int, str]:
    """Predictions already made by a killed run with the same settings, by row index.

    A file made with other settings is an error (its fix names `flag`, the option that chose where the file is), or
    deleted with `overwrite`; a last line cut short by the kill is dropped (and cut from the file, so lines appended
    later are read).
    """
    if not path.is_file():
        return {}
    done, good = read_partial(path, run_key, ids)
    if done is None:
        if not overwrite:
            raise stale_partial(path, run_key, flag)
        path.unlink()
        return {}
    if good < path.stat().st_size:
        os.truncate(path, good)
    return done


def deal_batches(costs: list[int], shares: int) -> list[list[int]]:
    """Indices into `costs` (one per batch) dealt into `shares` lists of near-equal total cost, each in index order.

    Whole batches, not rows, are dealt, so every row is generated in the same batch (same padding, same kernel
    shapes) whatever the number of processes. Largest first, each to the share with the least so far."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    dealt: list[list[int]] = [[] for _ in range(shares)]
    load = [0] * shares
    for index in order:
        rank = min(range(shares), key=lambda r: (load[r], r))
        dealt[rank].append(index)
        load[rank] += costs[index]
    return [sorted(share) for share in dealt]


def merge_partials(output_dir: Path, run_key: dict, ids: list[str]) -> tuple[dict[int, str], list[Path]]:
    """The predictions of every partial file made with these settings, and the files made with others."""
    done: dict[int, str] = {}
    stale = []
    for path in partial_files(output_dir):
        found, _ = read_partial(path, run_key, ids)
        if found is None:
            stale.append(path)
        else:
            done |= {i: p for i, p in found.items() if i not in done}
    return done, stale
