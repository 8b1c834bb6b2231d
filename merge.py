"""Merge a trained LoRA adapter into its base model (for QLoRA: the dequantized 4-bit weights it was trained on).

    python merge.py --config recipes/phi-2/qlora.yaml --adapter_path outputs/phi-2-xsum/adapter \
        --output_dir outputs/phi-2-xsum/merged
"""

from sumtune.cli import run
from sumtune.config import parse_args
from sumtune.manifest import check_output_path
from sumtune.merge import merge_adapter


def main():
    _, eval_args, training_args, model_args = parse_args(script="merge.py")
    check_output_path(training_args.output_dir)
    path = merge_adapter(model_args, eval_args.adapter_path, training_args.output_dir,
                         eval_args.overwrite_output_dir, training_args.chat_template_path, eval_args.merge_base)
    print(f"Merged model saved to {path}")


if __name__ == "__main__":
    run(main)
