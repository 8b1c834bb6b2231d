"""Shared entry-point plumbing: safe loading defaults, logging set-up, and one clear error line for bad input."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

# Every torch.load (checkpoint optimizer, scheduler and RNG states included) may only read tensors, never pickled code.
os.environ.setdefault("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
# bitsandbytes, imported on a CPU with AVX512-BF16, tries to fetch an optional faster 4-bit kernel from the Hub (through
# the `kernels` package) and warns "Failed to load ..." when it cannot; it then runs its own CPU kernels, which the
# tests check. Offline that warning reads like an error at every start, so it is dropped (before the imports below
# load bitsandbytes); its other messages stay.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward"))

from .config import ConfigError, RunError  # noqa: E402  (torch must see the variable above first)


def run(main: Callable[[], object]) -> None:
    """Run an entry point; a ConfigError becomes one `error:` line on stderr and exit code 2, a RunError (training
    diverged) or running out of memory one `error:` line and exit code 1."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # PEFT and TRL read the model's `is_gradient_checkpointing`, which transformers renamed and warns about at every
    # read: nothing a user of these scripts can change.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    import torch

    try:
        main()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except torch.OutOfMemoryError:
        print("error: out of GPU memory. Training: turn on gradient_checkpointing, or lower "
              "per_device_train_batch_size and raise gradient_accumulation_steps by the same factor (in a new "
              "--output_dir: another batch size cannot resume old checkpoints). Evaluation: halve "
              "generation_max_batch_tokens (the KV cache's size) and re-run; it resumes where it stopped.",
              file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """`sumtune COMMAND [settings]`: the pipeline's stages as one command (installed by `pip install`); each command
    is the root script of the same stage (`sumtune train` = `python train.py`)."""
    from .commands import COMMANDS

    argv = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: sumtune COMMAND [--config RECIPE] [settings]\n\ncommands, in pipeline order:\n"
             + "\n".join(f"  {name:<10} {(fn.__doc__ or '').strip().splitlines()[0]}" for name, fn in COMMANDS.items())
             + "\n\n`sumtune COMMAND --help` lists the settings a command takes.")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}: use one of {', '.join(COMMANDS)} (`sumtune --help`).",
              file=sys.stderr)
        sys.exit(2)
    run(lambda: COMMANDS[name](argv[1:], prog=f"sumtune {name}"))
