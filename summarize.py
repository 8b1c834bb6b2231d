"""Summarize one article, or a file of many, with the prompt and decoding evaluate.py uses.

    cat article.txt | python summarize.py --config recipes/phi-2/qlora.yaml \
        --adapter_path outputs/phi-2-xsum-qlora/adapter          # adapter on the 4-bit base

`sumtune summarize` runs the same command; `--help` lists this stage's settings (sumtune.commands.summarize).
"""

from sumtune.cli import run
from sumtune.commands import summarize as main

if __name__ == "__main__":
    run(main)
