"""Prepare XSum (or any article/summary data) for training: clean, subsample, fit to max_length, save.

    python prepare_data.py --config recipes/phi-2/qlora.yaml   # writes OUTPUT_DIR/data
"""

import json
import logging
from pathlib import Path

from sumtune.cli import run
from sumtune.config import parse_args
from sumtune.data import prepare_datasets, save_prepared
from sumtune.modeling import load_tokenizer
from sumtune.training import DATA_DIR

logger = logging.getLogger("prepare_data")


def main():
    data_args, _, training_args, model_args = parse_args()
    tokenizer = load_tokenizer(model_args.model_name_or_path, training_args.chat_template_path,
                               revision=model_args.model_revision)
    dataset, stats = prepare_datasets(data_args, tokenizer, training_args.max_length, training_args.seed,
                                      training_args.dataset_num_proc)
    target = Path(training_args.output_dir) / DATA_DIR
    save_prepared(dataset, stats, target)
    print(json.dumps(stats, indent=2))
    print(f"Prepared data saved to {target}")


if __name__ == "__main__":
    run(main)
