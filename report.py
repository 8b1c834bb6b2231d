"""Write a run's report (plots, example summaries) and put its scores into the model cards.

    python report.py --run_dir outputs/demo finetuned=outputs/demo/eval/merged base=outputs/demo/eval/base

`sumtune report` runs the same command; `--help` lists this stage's settings (sumtune.commands.report).
"""

from sumtune.cli import run
from sumtune.commands import report as main

if __name__ == "__main__":
    run(main)
