"""Merge a trained LoRA adapter into its base model (for QLoRA: the dequantized 4-bit weights it was trained on).

    python merge.py --config recipes/phi-2/qlora.yaml --adapter_path outputs/phi-2-xsum/adapter \
        --output_dir outputs/phi-2-xsum/merged

`sumtune merge` runs the same command; `--help` lists this stage's settings (sumtune.commands.merge).
"""

from sumtune.cli import run
from sumtune.commands import merge as main

if __name__ == "__main__":
    run(main)
