"""Upload a run's merged model and adapter, with their model cards, to the Hugging Face Hub.

    python publish.py --run_dir outputs/phi-2-xsum-qlora --hub_repo user/phi-2-xsum --dry_run   # what goes where

`sumtune publish` runs the same command; `--help` lists this stage's settings (sumtune.commands.publish).
"""

from sumtune.cli import run
from sumtune.commands import publish as main

if __name__ == "__main__":
    run(main)
