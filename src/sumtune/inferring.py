"""The generation layer beneath evaluate.py and summarize.py: the tokenizer and model they generate with (a merged
model, or a base + adapter, 4-bit or dequantized or merged in memory), the settings that key their outputs, and
appending predictions to a resumable file as they are made."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from accelerate import PartialState
from tqdm import tqdm
from trl import ModelConfig, SFTConfig

from .config import ConfigError, EvalArguments
from .decoding import Decoding
from .manifest import rows_fingerprint
from .modeling import dequantize_4bit_linears, load_model, load_tokenizer, merge_adapter_weights
from .prompts import Prompt

logger = logging.getLogger(__name__)


def generation_tokenizer(eval_args: EvalArguments, training_args: SFTConfig, model_args: ModelConfig):
    if eval_args.adapter_path:
        return load_tokenizer(eval_args.adapter_path, training_args.chat_template_path, padding_side="left")
    return load_tokenizer(model_args.model_name_or_path, training_args.chat_template_path, padding_side="left",
                          revision=model_args.model_revision)


def model_fingerprint(path: str) -> str | None:
    """Identifies the weights of a local model or adapter folder (names, sizes, mtimes), cheap for large models."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix == ".safetensors")
    return rows_fingerprint({"name": p.name, "size": p.stat().st_size, "mtime": p.stat().st_mtime_ns} for p in files)


def load_generation_model(eval_args: EvalArguments, model_args: ModelConfig, state: PartialState):
    """Each process loads the whole model onto its own GPU (data parallel); on a CPU, where it is now."""
    check_merge_options(eval_args, model_args)
    model = load_model(model_args, device=str(state.device) if state.device.type == "cuda" else None)
    if eval_args.adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, eval_args.adapter_path)
    if eval_args.dequantize_4bit_base and model_args.load_in_4bit:
        logger.info("Dequantized %d 4-bit layers for generation", dequantize_4bit_linears(model))
    if eval_args.merge_adapter:
        model = merge_adapter_weights(model)
        logger.info("Merged the adapter into the base weights in memory for generation")
    return model


def check_merge_options(eval_args: EvalArguments, model_args: ModelConfig) -> None:
    if eval_args.merge_adapter and not eval_args.adapter_path:
        raise ConfigError("--merge_adapter true needs --adapter_path (the adapter to merge); without an adapter drop "
                          "--merge_adapter.")
    if eval_args.merge_adapter and model_args.load_in_8bit:
        raise ConfigError("--merge_adapter true cannot merge into an 8-bit base: use --load_in_8bit false (a 16-bit "
                          "base) or merge.py.")
    if eval_args.merge_adapter and model_args.load_in_4bit and not eval_args.dequantize_4bit_base:
        raise ConfigError("--merge_adapter true with a 4-bit base (--load_in_4bit true) needs --dequantize_4bit_base "
                          "true: merging into 4-bit weights would requantize them.")


def append_predictions(path: Path, run_key: dict, ids: list[str], prompts: list, rows: list[int],
                       encoded: list[list[int]], batches: list[list[int]], tokenizer, decoding: Decoding,
                       model, progress: bool = False) -> None:
    """Generate `batches` (lists of positions in `prompts`, whose token ids are `encoded` and whose row indices are
    `rows`) and append each prediction to `path` as soon as it is made. `progress`: a progress bar on stderr when
    it is a terminal."""
    bar = tqdm(total=sum(len(batch) for batch in batches), desc="Generating", unit="summaries",
               disable=None if progress else True)
    with path.open("ab") as handle, bar:
        if handle.tell() == 0:
            handle.write((json.dumps({"run_key": run_key}) + "\n").encode("utf-8"))
        last_sync = time.monotonic()
        for j, text in decoding.iter_summaries(model, tokenizer, prompts, batches=batches, encoded=encoded):
            index = rows[j]
            line = json.dumps({"index": index, "id": ids[index], "prediction": text}, ensure_ascii=False)
            handle.write((line + "\n").encode("utf-8"))
            handle.flush()  # a killed process keeps every finished line
            bar.update()
            if time.monotonic() - last_sync > 1.0:  # a preempted machine keeps all but the last second
                os.fsync(handle.fileno())
                last_sync = time.monotonic()
        os.fsync(handle.fileno())


def generation_settings(eval_args: EvalArguments, training_args: SFTConfig, model_args: ModelConfig, prompt: Prompt,
                        decoding: Decoding) -> dict:
    """What decides the text a model generates for an article: evaluate.py and summarize.py key their outputs (reuse,
    resume) by it."""
    return {"model": model_args.model_name_or_path, "model_revision": model_args.model_revision,
            "model_fingerprint": model_fingerprint(model_args.model_name_or_path),
            "adapter": eval_args.adapter_path,
            "adapter_fingerprint": eval_args.adapter_path and model_fingerprint(eval_args.adapter_path),
            "dtype": model_args.dtype, "load_in_4bit": model_args.load_in_4bit,
            "max_length": training_args.max_length, "prompt_hash": prompt.hash,
            "article_budget": "max_length - max_new_tokens", **decoding.text_settings(),
            "merge_adapter": eval_args.merge_adapter}  # rounds base + update once: not bit-identical
