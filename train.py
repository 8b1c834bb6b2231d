"""Fine-tune a causal LM into a summarizer with QLoRA (TRL SFTTrainer, completion-only loss).

    accelerate launch --config_file accelerate_configs/single_gpu.yaml train.py --config recipes/phi-2/qlora.yaml
    python train.py --config recipes/tiny/demo.yaml --max_steps 10    # any recipe key can be overridden

`sumtune train` runs the same command; `--help` lists this stage's settings (sumtune.commands.train).
"""

from sumtune.cli import run
from sumtune.commands import train as main

if __name__ == "__main__":
    run(main)
