"""Fold a LoRA adapter into a 16-bit copy of its base model and save it as a standalone model."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from trl import ModelConfig

from .config import ConfigError
from .manifest import TMP_SUFFIX, publish_dir, read_manifest, tmp_dir_for, write_manifest
from .modeling import load_model, load_tokenizer, resolve_dtype
from .preflight import check_adapter, check_free_disk, check_model_source

logger = logging.getLogger(__name__)


def weights_bytes(model_name_or_path: str) -> int:
    folder = Path(model_name_or_path)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) if folder.is_dir() else 0


def merge_adapter(model_args: ModelConfig, adapter_path: str | None, output_dir: str | Path,
                  overwrite: bool = False, chat_template_path: str | None = None) -> Path:
    """Reload the base in the recipe's 16-bit dtype (never 4-bit: merging into quantized weights loses the update),
    merge, and write safetensors, tokenizer and generation config through a temporary folder."""
    output_dir = Path(output_dir)
    check_adapter(adapter_path, model_args.model_name_or_path)
    check_model_source(model_args.model_name_or_path)
    if output_dir.name.endswith(TMP_SUFFIX):
        raise ConfigError(f"--output_dir {output_dir} ends in {TMP_SUFFIX}, which marks unfinished outputs: pick "
                          "another name.")
    if output_dir.exists() and not overwrite:
        raise ConfigError(f"{output_dir} already exists: pass --overwrite_output_dir true to replace it.")
    # The merged copy is at most the size of the base's files (smaller when they are fp32 and the merge is 16-bit).
    check_free_disk(output_dir, weights_bytes(model_args.model_name_or_path) + 2**28, "the merged model")
    if model_args.dtype in (None, "auto", "float32"):
        logger.info("Merging in %s", model_args.dtype or "auto")
    from peft import PeftModel

    # Merge in fp32 and cast once: adding the low-rank update to 16-bit weights would round it into 16 bits first,
    # and an update smaller than the weight's rounding step would vanish (seen as a 3.4% logit gap in bf16 on an H200).
    target = resolve_dtype(model_args.dtype)
    base = load_model(dataclasses.replace(model_args, dtype="float32") if target != "auto" else model_args,
                      quantize=False)
    merged = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    if target != "auto":
        merged = merged.to(target)
    tokenizer = load_tokenizer(adapter_path, chat_template_path)
    tmp = tmp_dir_for(output_dir)
    merged.generation_config.eos_token_id = tokenizer.eos_token_id
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for name in ("chat_template.jinja", "instruction.txt", "run_config.json", "log_history.json"):
        if (Path(adapter_path) / name).is_file():
            shutil.copy(Path(adapter_path) / name, tmp / name)
    adapter_manifest = read_manifest(adapter_path) or {}
    config = None
    if (Path(adapter_path) / "run_config.json").is_file():
        config = json.loads((Path(adapter_path) / "run_config.json").read_text())
    write_manifest(tmp, config=config, base_model=model_args.model_name_or_path, adapter=str(adapter_path),
                   dtype=model_args.dtype, dataset_fingerprint=adapter_manifest.get("dataset_fingerprint"),
                   prompt_hash=adapter_manifest.get("prompt_hash"), adapter_manifest=adapter_manifest or None)
    publish_dir(tmp, output_dir)
    return output_dir
