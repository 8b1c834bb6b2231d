"""A pipeline stage's output: what is done with one already there, and the name that marks one unfinished.

Every stage (prepared data, adapter, merged model, evaluation, real-model folder) writes into a folder the user names.
Found there already, a finished output made with the same settings is reused; none, or `--overwrite_output_dir true`,
means it is made (again); one made with other settings is refused with one message naming the folder, the settings
that differ and the fix. Outputs are built under `<name>.tmp` and renamed into place when complete
(`manifest.tmp_dir_for`, `manifest.publish_dir`), so a `.tmp` name always means unfinished.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .config import ConfigError
from .manifest import TMP_SUFFIX

logger = logging.getLogger(__name__)

# A refusal names this many changed settings, then how many more there are.
CHANGES_SHOWN = 4
VALUE_CHARS = 80


def is_unfinished(path: str | Path) -> bool:
    """A file or folder still being written (or left by a killed run): its name ends in `.tmp`."""
    return Path(path).name.endswith(TMP_SUFFIX)


def check_output_name(path: str | Path, flag: str = "--output_dir") -> None:
    """An output cannot be named like an unfinished one: the next run would take it for a leftover."""
    if is_unfinished(path):
        raise ConfigError(f"{flag} {path} ends in {TMP_SUFFIX}, which marks unfinished outputs: pick another name.")


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as one level of dotted keys, values as JSON gives them back (tuples as lists, paths as
    strings), so settings read from a file compare equal to the ones they were written from."""
    flat = {}
    for key, value in json.loads(json.dumps(settings, default=str)).items():
        if isinstance(value, dict) and value:
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS - 3] + "..."


def settings_changes(made_with: dict, settings: dict) -> list[str]:
    """`key: old -> new` for every setting that differs (nested keys dotted, a missing one shown as None); values
    changed from one to another come first, ahead of ones recorded on one side only."""
    old, new = _flat(made_with), _flat(settings)
    changed = [key for key in old.keys() | new.keys() if old.get(key) != new.get(key)]
    changed.sort(key=lambda key: (old.get(key) is None or new.get(key) is None, key))
    return [f"{key}: {_shown(old.get(key))} -> {_shown(new.get(key))}" for key in changed]


def refusal(path: str | Path, what: str, made_with: dict | None, settings: dict, flag: str = "--output_dir",
            resumable: bool = False) -> ConfigError:
    """The one error for an output that is in the way: `made_with` the settings it records (None: it is not a
    finished `what` at all). `resumable`: an unfinished output that a re-run with its own settings continues."""
    if made_with is None:
        head = f"{path} already holds files, but not {what}"
    else:
        changes = settings_changes(made_with, settings)
        more = f"; and {len(changes) - CHANGES_SHOWN} more" if len(changes) > CHANGES_SHOWN else ""
        head = f"{path} already holds {what} made with other settings ({'; '.join(changes[:CHANGES_SHOWN])}{more})"
    tail = " (the same settings resume it)" if resumable else ""
    return ConfigError(f"{head}: pass --overwrite_output_dir true to replace it, or a new {flag}{tail}.")


def reuse_or_make(path: str | Path, what: str, made_with: dict | None, settings: dict, overwrite: bool,
                  occupied: bool = False, flag: str = "--output_dir") -> bool:
    """True: `path` holds a finished `what` made with `settings`, to be reused. False: it is to be made, because
    there is none (`made_with` None) or `overwrite` replaces it. Raises the `refusal` for one made with other
    settings, and, with `occupied`, for a folder that holds something else (a stage that would replace it whole).

    `made_with`: the settings the finished output records, compared key by key with `settings`.
    """
    if overwrite:
        return False
    if made_with is None:
        if occupied:
            raise refusal(path, what, None, settings, flag)
        return False
    if settings_changes(made_with, settings):
        raise refusal(path, what, made_with, settings, flag)
    logger.info("%s already holds %s made with these settings: reusing it (--overwrite_output_dir true makes it "
                "again).", path, what)
    return True
