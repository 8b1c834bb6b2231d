"""Generate summaries and score them with ROUGE (F1 x 100, Porter stemmer, bootstrap 95% intervals).

    python evaluate.py --config recipes/phi-2/qlora.yaml --model_name_or_path outputs/phi-2-xsum/merged \
        --load_in_4bit false --dataset_name outputs/phi-2-xsum/data --output_dir outputs/phi-2-xsum/eval/merged
    python evaluate.py --predictions_file predictions.jsonl --output_dir eval/   # score an existing file
    python evaluate.py --baseline lead --dataset_name test.jsonl --output_dir eval/lead
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml evaluate.py ...   # one share per GPU

Run again with the same settings, it reuses the finished evaluation; `--overwrite_output_dir true` makes it anew.
"""

from sumtune.cli import run
from sumtune.config import parse_args
from sumtune.evaluation import METRICS_FILE, evaluate, format_table


def main():
    data_args, eval_args, training_args, model_args = parse_args(script="evaluate.py")
    metrics = evaluate(data_args, eval_args, training_args, model_args)
    if metrics is None:  # not the main process: it wrote and reports the results
        return
    print(format_table({metrics["mode"]: metrics}))
    print(f"{metrics['num_rows']} rows, ROUGE F1 x 100 [95% interval]; metrics written to "
          f"{training_args.output_dir}/{METRICS_FILE}")


if __name__ == "__main__":
    run(main)
