"""Summarize one article (a text file or stdin) with a merged model or a base model + adapter, using the same
prompt and generation settings as evaluate.py.

    python summarize.py --config recipes/phi-2/qlora.yaml --model_name_or_path outputs/phi-2-xsum-qlora/merged \
        --load_in_4bit false --input_file article.txt
    cat article.txt | python summarize.py --config recipes/phi-2/qlora.yaml \
        --adapter_path outputs/phi-2-xsum-qlora/adapter          # adapter on the 4-bit base
"""

import sys
from pathlib import Path

from accelerate import PartialState

from sumtune.cli import run
from sumtune.config import ConfigError, parse_args
from sumtune.data import fit_to_budget
from sumtune.evaluation import load_eval_model
from sumtune.generation import generate_summaries
from sumtune.modeling import load_tokenizer
from sumtune.preflight import check_adapter, check_model_source
from sumtune.prompts import read_text


def read_article(input_file: str | None) -> str:
    """The article as text, from a file or stdin (unset or `-`)."""
    if input_file in (None, "-"):
        raw, source = sys.stdin.buffer.read(), "The input on stdin"
    elif Path(input_file).is_file():
        raw, source = Path(input_file).read_bytes(), input_file
    else:
        raise ConfigError(f"Input file not found: {input_file}. Pass a text file or pipe the article in.")
    hint = "pass the article as a plain text file (a PDF or Word file must be converted to text first)."
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}): "
                          f"{hint}") from None
    if "\x00" in text:  # valid UTF-8 yet binary: text files hold no NUL bytes
        raise ConfigError(f"{source} is a binary file (it holds NUL bytes): {hint}")
    return text


def main():
    data_args, eval_args, training_args, model_args = parse_args(script="summarize.py")
    article = read_article(eval_args.input_file)
    if not article.strip():
        raise ConfigError("The article is empty: pass a text file with --input_file or pipe one in.")
    check_model_source(model_args.model_name_or_path)
    if eval_args.adapter_path:
        check_adapter(eval_args.adapter_path, model_args.model_name_or_path)
    tokenizer = load_tokenizer(eval_args.adapter_path or model_args.model_name_or_path,
                               training_args.chat_template_path, padding_side="left")
    instruction = read_text(data_args.instruction_path, "Instruction file")
    # Room for the summary: the article is cut so that prompt + max_new_tokens fit max_length.
    fitted = fit_to_budget(tokenizer, instruction, article, "", training_args.max_length - eval_args.max_new_tokens)
    if fitted is None:
        raise ConfigError(f"max_length={training_args.max_length} leaves no room for the prompt and "
                          f"max_new_tokens={eval_args.max_new_tokens}: raise --max_length.")
    model = load_eval_model(eval_args, model_args, PartialState())  # as evaluate.py loads it, adapter included
    summary, = generate_summaries(model, tokenizer, [fitted["prompt"]], eval_args.max_new_tokens, eval_args.num_beams,
                                  cudnn_attention=eval_args.cudnn_attention)
    print(summary)


if __name__ == "__main__":
    run(main)
