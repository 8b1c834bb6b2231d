"""Prepare XSum (or any article/summary data) for training: clean, subsample, fit to max_length, save.

    python prepare_data.py --config recipes/phi-2/qlora.yaml   # writes OUTPUT_DIR/data
"""

from pathlib import Path

from sumtune.cli import run
from sumtune.config import parse_args
from sumtune.data import prepare_datasets, prepare_settings, reuse_prepared, save_prepared
from sumtune.manifest import check_output_path
from sumtune.modeling import load_tokenizer
from sumtune.prompts import Prompt
from sumtune.training import DATA_DIR


def main():
    data_args, eval_args, training_args, model_args = parse_args(script="prepare_data.py")
    check_output_path(training_args.output_dir)
    target = Path(training_args.output_dir) / DATA_DIR
    tokenizer = load_tokenizer(model_args.model_name_or_path, training_args.chat_template_path,
                               revision=model_args.model_revision)
    settings = prepare_settings(data_args, Prompt.load(tokenizer, data_args.instruction_path),
                                training_args.max_length, training_args.seed)
    if reuse_prepared(target, settings, eval_args.overwrite_output_dir):
        print(f"Prepared data in {target} (reused)")
        return
    dataset, stats = prepare_datasets(data_args, tokenizer, training_args.max_length, training_args.seed,
                                      training_args.dataset_num_proc)
    save_prepared(dataset, stats, target)
    print(f"Prepared data saved to {target} (statistics in {target / 'stats.json'})")


if __name__ == "__main__":
    run(main)
