"""Prepare XSum (or any article/summary data) for training: clean, subsample, fit to max_length, save.

    python prepare_data.py --config recipes/phi-2/qlora.yaml   # writes OUTPUT_DIR/data

`sumtune data` runs the same command; `--help` lists this stage's settings (sumtune.commands.prepare_data).
"""

from sumtune.cli import run
from sumtune.commands import prepare_data as main

if __name__ == "__main__":
    run(main)
