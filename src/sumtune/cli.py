"""Shared entry-point plumbing: logging set-up and one clear error line for bad input."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from .config import ConfigError


def run(main: Callable[[], object]) -> None:
    """Run an entry point; a ConfigError becomes one `error:` line on stderr and exit code 2."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        main()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
