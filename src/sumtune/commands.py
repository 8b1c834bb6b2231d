"""The pipeline's stages as commands: what `sumtune <command>` and the root scripts (prepare_data.py, train.py, ...)
run. Each takes its arguments (argv) and the name it was called by (prog, for messages and --help) and parses only the
settings of its stage (config.STAGE_SETTINGS); the work is one call into the library."""

from __future__ import annotations

import argparse
import json
import logging

from .config import ConfigError, parse_args


def _describe(function) -> str:
    return (function.__doc__ or "").strip()


def prepare_data(argv: list[str] | None = None, prog: str = "python prepare_data.py") -> None:
    """Prepare XSum (or any article/summary data) for training: clean, subsample, fit to max_length, save.

        python prepare_data.py --config recipes/phi-2/qlora.yaml   # writes OUTPUT_DIR/data
    """
    from .data import prepare

    data_args, eval_args, training_args, model_args = parse_args(argv, "prepare_data.py", prog,
                                                                 _describe(prepare_data))
    target, reused = prepare(data_args, training_args, model_args, eval_args.overwrite_output_dir)
    print(f"Prepared data in {target} (reused)" if reused
          else f"Prepared data saved to {target} (statistics in {target / 'stats.json'})")


def train(argv: list[str] | None = None, prog: str = "python train.py") -> None:
    """Fine-tune a causal LM into a summarizer with QLoRA (TRL SFTTrainer, completion-only loss).

        accelerate launch --config_file accelerate_configs/single_gpu.yaml train.py --config recipes/phi-2/qlora.yaml
        python train.py --config recipes/tiny/demo.yaml --max_steps 10    # any recipe key can be overridden
    """
    from accelerate import PartialState

    from .training import train as run_training

    data_args, eval_args, training_args, model_args = parse_args(argv, "train.py", prog, _describe(train))
    adapter_dir = run_training(data_args, training_args, model_args, eval_args)
    if PartialState().is_main_process:
        print(f"Adapter saved to {adapter_dir}")


def merge(argv: list[str] | None = None, prog: str = "python merge.py") -> None:
    """Merge a trained LoRA adapter into its base model (for QLoRA: the dequantized 4-bit weights it was trained on).

        python merge.py --config recipes/phi-2/qlora.yaml --adapter_path outputs/phi-2-xsum/adapter \\
            --output_dir outputs/phi-2-xsum/merged
    """
    from .manifest import check_output_path
    from .merge import merge_adapter

    _, eval_args, training_args, model_args = parse_args(argv, "merge.py", prog, _describe(merge))
    check_output_path(training_args.output_dir)
    path = merge_adapter(model_args, eval_args.adapter_path, training_args.output_dir,
                         eval_args.overwrite_output_dir, training_args.chat_template_path, eval_args.merge_base)
    print(f"Merged model saved to {path}")


def evaluate(argv: list[str] | None = None, prog: str = "python evaluate.py") -> None:
    """Generate summaries and score them with ROUGE (F1 x 100, Porter stemmer, bootstrap 95% intervals).

        python evaluate.py --config recipes/phi-2/qlora.yaml --model_name_or_path outputs/phi-2-xsum/merged \\
            --load_in_4bit false --dataset_name outputs/phi-2-xsum/data --output_dir outputs/phi-2-xsum/eval/merged
        python evaluate.py --predictions_file predictions.jsonl --output_dir eval/   # score an existing file
        python evaluate.py --baseline lead --dataset_name test.jsonl --output_dir eval/lead
        accelerate launch --config_file accelerate_configs/multi_gpu.yaml evaluate.py ...   # one share per GPU

    Run again with the same settings, it reuses the finished evaluation; `--overwrite_output_dir true` makes it anew.
    """
    from .evaluation import METRICS_FILE, format_table
    from .evaluation import evaluate as run_evaluation

    data_args, eval_args, training_args, model_args = parse_args(argv, "evaluate.py", prog, _describe(evaluate))
    metrics = run_evaluation(data_args, eval_args, training_args, model_args)
    if metrics is None:  # not the main process: it wrote and reports the results
        return
    print(format_table({metrics["mode"]: metrics}))
    print(f"{metrics['num_rows']} rows, ROUGE F1 x 100 [95% interval]; metrics written to "
          f"{training_args.output_dir}/{METRICS_FILE}")


def summarize(argv: list[str] | None = None, prog: str = "python summarize.py") -> None:
    """Summarize one article, or a file of many, with a merged model or a base model + adapter, with the prompt and
    decoding settings evaluate.py uses.

        python summarize.py --config recipes/phi-2/qlora.yaml --model_name_or_path outputs/phi-2-xsum-qlora/merged \\
            --load_in_4bit false --input_file article.txt
        cat article.txt | python summarize.py --config recipes/phi-2/qlora.yaml \\
            --adapter_path outputs/phi-2-xsum-qlora/adapter          # adapter on the 4-bit base
        python summarize.py --config recipes/phi-2/qlora.yaml --model_name_or_path outputs/phi-2-xsum-qlora/merged \\
            --load_in_4bit false --input_file articles.jsonl --output_file summaries.jsonl   # or .csv, or a folder
    """
    from .summarizing import is_many, summarize_many, summarize_one

    data_args, eval_args, training_args, model_args = parse_args(argv, "summarize.py", prog, _describe(summarize))
    if is_many(eval_args.input_file):
        if not eval_args.output_file:
            raise ConfigError(f"{eval_args.input_file} holds many articles: pass --output_file summaries.jsonl.")
        counts = summarize_many(data_args, eval_args, training_args, model_args)
        logging.getLogger("summarize").info("Wrote %s: %s", eval_args.output_file, json.dumps(counts))
    elif eval_args.output_file:
        raise ConfigError("--output_file is for many articles (a .jsonl or .csv file, or a folder of .txt files); "
                          "one article's summary is printed.")
    else:
        print(summarize_one(data_args, eval_args, training_args, model_args))


def _parser(prog: str, function) -> argparse.ArgumentParser:
    """A small argparse parser for the commands outside the recipe schema; a usage problem is one ConfigError."""
    doc = _describe(function).splitlines()
    parser = argparse.ArgumentParser(prog=prog, description=doc[0], epilog="\n".join(doc[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(message):
        raise ConfigError(f"{message}. `{prog} --help` shows the usage.")

    parser.error = error
    return parser


def report(argv: list[str] | None = None, prog: str = "python report.py") -> None:
    """Write a run's report (report.md with loss, ROUGE and length plots, example summaries) and put the evaluation
    scores into the model cards of its adapter and merged model.

        python report.py --run_dir outputs/phi-2-xsum-qlora finetuned=outputs/phi-2-xsum-qlora/eval/merged \\
            base=outputs/phi-2-xsum-qlora/eval/base lead=outputs/phi-2-xsum-qlora/eval/lead
    """
    parser = _parser(prog, report)
    parser.add_argument("evaluations", nargs="+", metavar="NAME=EVAL_DIR",
                        help="evaluate.py output folders, each under the name the report shows it with")
    parser.add_argument("--run_dir", required=True, help="train.py's --output_dir (holds adapter/ and merged/)")
    parser.add_argument("--output_dir", help="where report/ goes (default: RUN_DIR/report)")
    args = parser.parse_args(argv)
    from .report import parse_pairs, write_report  # plotting and data libraries load after the arguments

    path = write_report(args.run_dir, parse_pairs(args.evaluations), args.output_dir)
    print(f"Report written to {path}")


def publish(argv: list[str] | None = None, prog: str = "python publish.py") -> None:
    """Upload a run's merged model (to HUB_REPO) and its LoRA adapter (to HUB_REPO-adapter) to the Hugging Face Hub,
    each with its model card; only runs whose cards hold evaluation results (`make report`) are uploaded.

        python publish.py --run_dir outputs/phi-2-xsum-qlora --hub_repo user/phi-2-xsum --dry_run   # what goes where
        HF_TOKEN=hf_... python publish.py --run_dir outputs/phi-2-xsum-qlora --hub_repo user/phi-2-xsum --private
    """
    parser = _parser(prog, publish)
    parser.add_argument("--run_dir", required=True, help="train.py's --output_dir (holds adapter/ and merged/)")
    parser.add_argument("--hub_repo", required=True, help="user/name: the merged model's repository; the adapter "
                                                          "goes to user/name-adapter")
    parser.add_argument("--private", action="store_true", help="create the repositories private")
    parser.add_argument("--dry_run", action="store_true", help="list the files and repositories; upload nothing")
    args = parser.parse_args(argv)
    from huggingface_hub import get_token

    from .publish import describe, plan_uploads, upload

    token = None if args.dry_run else get_token()
    uploads = plan_uploads(args.run_dir, args.hub_repo, token, args.dry_run)
    print(describe(uploads, args.private, args.dry_run))
    if not args.dry_run:
        for url in upload(uploads, args.private, token):
            print(f"Uploaded: {url}")


# `sumtune <name>`: the stages in pipeline order.
COMMANDS = {"data": prepare_data, "train": train, "merge": merge, "eval": evaluate, "summarize": summarize,
            "report": report, "publish": publish}
