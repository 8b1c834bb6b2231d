"""The pipeline's stages as commands: what `sumtune <command>` and the root scripts (prepare_data.py, train.py, ...)
run. Each takes its arguments (argv) and the name it was called by (prog, for messages and --help) and parses only the
settings of its stage (config.STAGE_SETTINGS); the work is one call into the library."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path

from .config import ConfigError, parse_args


def _describe(function) -> str:
    return (function.__doc__ or "").strip()


def prepare_data(argv: list[str] | None = None, prog: str = "python prepare_data.py") -> None:
    """Prepare XSum (or any article/summary data) for training: clean, subsample, fit to max_length, save.

        python prepare_data.py --config recipes/phi-2/qlora.yaml   # writes OUTPUT_DIR/data
    """
    from .data import prepare
    from .layout import STATS_FILE

    data_args, eval_args, training_args, model_args = parse_args(argv, "prepare_data.py", prog,
                                                                 _describe(prepare_data))
    target, reused = prepare(data_args, training_args, model_args, eval_args.overwrite_output_dir)
    print(f"Prepared data in {target} (reused)" if reused
          else f"Prepared data saved to {target} (statistics in {target / STATS_FILE})")


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
    from .evaluation import evaluate as run_evaluation
    from .evaluation import format_table
    from .layout import METRICS_FILE

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


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "yes", "1", "false", "no", "0"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text.lower() in ("true", "yes", "1")


def _flags(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be split into flags ({err})") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def curve(argv: list[str] | None = None, prog: str = "python curve.py") -> None:
    """The learning curve: ROUGE against training rows, projected to 2x and 4x the rows (would more rows pay?).

    The recipe is trained on nested fractions of the prepared training rows, each adapter scored on the test rows.

        make data RECIPE=recipes/smollm2-135m/demo-cpu.yaml OUTPUT_DIR=outputs/demo       # OUTPUT_DIR/data, once
        python curve.py --config recipes/smollm2-135m/demo-cpu.yaml --output_dir outputs/demo
        python curve.py --config recipes/phi-2/qlora.yaml --output_dir outputs/phi-2-xsum-qlora --fractions 1/4,1/2,1 \
            --train_args="--max_steps -1 --num_train_epochs 2"

    Writes OUTPUT_DIR/curve/ (one folder per size, curve.json, curve.png); `make report` then shows it. Run again with
    the same settings, finished sizes are reused; `--overwrite_output_dir true` makes every size again.
    """
    parser = _parser(prog, curve)
    parser.add_argument("--config", required=True, help="the recipe every size is trained and scored with")
    parser.add_argument("--output_dir", required=True,
                        help="the run folder: its data/ (from `make data`) is the source; the curve goes to curve/")
    parser.add_argument("--data_dir", help="prepared data to take the rows from (default: OUTPUT_DIR/data)")
    parser.add_argument("--fractions", default="1/8,1/4,1/2,1",
                        help="fractions of the training rows, one size each (default: 1/8,1/4,1/2,1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the shuffle the nested sizes are taken from, and the bootstrap's (default: 0)")
    parser.add_argument("--model_name_or_path", help="the base model (default: the recipe's)")
    parser.add_argument("--train_args", type=_flags, default=[],
                        help='more train.py flags for every size, e.g. --train_args="--learning_rate 1e-3"')
    parser.add_argument("--eval_args", type=_flags, default=[],
                        help='more evaluate.py flags for every size, e.g. --eval_args="--num_beams 4"')
    parser.add_argument("--bootstrap_samples", type=_positive, default=1000,
                        help="resamples of the test rows behind the projection's interval (default: 1000)")
    parser.add_argument("--overwrite_output_dir", type=_boolean, default=False,
                        help="true: make every size again instead of reusing finished ones")
    args = parser.parse_args(argv)
    from .curve import CURVE_FILE, CurveSpec, format_curve, parse_fractions, run_curve  # after the arguments

    spec = CurveSpec(recipe=args.config, run_dir=args.output_dir, fractions=parse_fractions(args.fractions),
                     data_dir=args.data_dir, seed=args.seed, model=args.model_name_or_path,
                     train_args=args.train_args, eval_args=args.eval_args,
                     bootstrap_samples=args.bootstrap_samples, overwrite=args.overwrite_output_dir)
    result = run_curve(spec)
    print(format_curve(result))
    print(f"Learning curve written to {spec.folder / CURVE_FILE} with its plot; `make report` adds it to the run's "
          "report.")


def gguf(argv: list[str] | None = None, prog: str = "python export_gguf.py") -> None:
    """Export a run's merged model as GGUF files for llama.cpp, Ollama and LM Studio (f16, q8_0, q4_k_m), with the
    chat template, the stop token and an Ollama Modelfile; converted and quantized by llama.cpp's own tools.

        python export_gguf.py --run_dir outputs/demo                      # outputs/demo/merged -> outputs/demo/gguf
        python export_gguf.py --merged_dir path/to/model --output_dir path/to/gguf --types f16 q8_0
    Needs the optional toolchain: `make install-gguf` (docs/gguf.md).
    """
    parser = _parser(prog, gguf)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run_dir", help="train.py's --output_dir: exports RUN_DIR/merged into RUN_DIR/gguf")
    source.add_argument("--merged_dir", help="a merged model folder (then --output_dir is needed)")
    parser.add_argument("--output_dir", help="where the GGUF files go (default: RUN_DIR/gguf)")
    parser.add_argument("--types", nargs="+", default=["f16", "q8_0", "q4_k_m"], metavar="TYPE",
                        help="GGUF types to write, of f16, q8_0, q4_k_m (default: all three)")
    parser.add_argument("--overwrite_output_dir", default="false", choices=["true", "false"],
                        help="replace an export made with other settings (default: false)")
    args = parser.parse_args(argv)
    if args.merged_dir and not args.output_dir:
        parser.error("--merged_dir needs --output_dir")
    from .gguf_export import export_gguf
    from .layout import GGUF_DIR, MERGED_DIR

    merged = Path(args.merged_dir) if args.merged_dir else Path(args.run_dir) / MERGED_DIR
    output = Path(args.output_dir) if args.output_dir else Path(args.run_dir) / GGUF_DIR
    path = export_gguf(merged, output, args.types, args.overwrite_output_dir == "true")
    print(f"GGUF files in {path}")


# `sumtune <name>`: the stages in pipeline order.
COMMANDS = {"data": prepare_data, "train": train, "merge": merge, "eval": evaluate, "summarize": summarize,
            "report": report, "curve": curve, "gguf": gguf, "publish": publish}
