"""The learning curve: ROUGE against training rows, projected to 2x and 4x the rows (would more rows pay?).

    python curve.py --config recipes/smollm2-135m/demo-cpu.yaml --output_dir outputs/demo

`sumtune curve` runs the same command; `--help` lists its settings (sumtune.commands.curve).
"""

from sumtune.cli import run
from sumtune.commands import curve as main

if __name__ == "__main__":
    run(main)
