"""Summarize one article, or a file of many, with a merged model or a base model + adapter, with the prompt and
decoding settings evaluate.py uses (src/sumtune/summarizing.py).

    python summarize.py --config recipes/phi-2/qlora.yaml --model_name_or_path outputs/phi-2-xsum-qlora/merged \
        --load_in_4bit false --input_file article.txt
    cat article.txt | python summarize.py --config recipes/phi-2/qlora.yaml \
        --adapter_path outputs/phi-2-xsum-qlora/adapter          # adapter on the 4-bit base
    python summarize.py --config recipes/phi-2/qlora.yaml --model_name_or_path outputs/phi-2-xsum-qlora/merged \
        --load_in_4bit false --input_file articles.jsonl --output_file summaries.jsonl   # or .csv, or a folder of .txt
"""

import json
import logging

from sumtune.cli import run
from sumtune.config import ConfigError, parse_args
from sumtune.summarizing import is_many, summarize_many, summarize_one


def main():
    data_args, eval_args, training_args, model_args = parse_args(script="summarize.py")
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


if __name__ == "__main__":
    run(main)
