"""Fine-tune a causal LM into a summarizer with QLoRA (TRL SFTTrainer, completion-only loss).

    accelerate launch --config_file accelerate_configs/single_gpu.yaml train.py --config recipes/phi-2/qlora.yaml
    python train.py --config recipes/tiny/demo.yaml --max_steps 10    # any recipe key can be overridden
"""

from accelerate import PartialState

from sumtune.cli import run
from sumtune.config import parse_args
from sumtune.training import train


def main():
    data_args, eval_args, training_args, model_args = parse_args(script="train.py")
    adapter_dir = train(data_args, training_args, model_args, eval_args)
    if PartialState().is_main_process:
        print(f"Adapter saved to {adapter_dir}")


if __name__ == "__main__":
    run(main)
