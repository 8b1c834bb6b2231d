"""Fold a LoRA adapter into a 16-bit copy of its base model and save it as a standalone model."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from peft import PeftModel
from trl import ModelConfig

from .config import ConfigError
from .manifest import write_manifest
from .modeling import load_model, load_tokenizer

logger = logging.getLogger(__name__)


def merge_adapter(model_args: ModelConfig, adapter_path: str | None, output_dir: str | Path,
                  overwrite: bool = False, chat_template_path: str | None = None) -> Path:
    """Reload the base in the recipe's 16-bit dtype (never 4-bit: merging into quantized weights loses the update),
    merge, and write safetensors, tokenizer and generation config through a temporary folder."""
    output_dir = Path(output_dir)
    if not adapter_path or not (Path(adapter_path) / "adapter_config.json").is_file():
        raise ConfigError(f"No adapter at {adapter_path!r}: pass --adapter_path OUTPUT_DIR/adapter (written by "
                          "train.py).")
    if output_dir.exists() and not overwrite:
        raise ConfigError(f"{output_dir} already exists: pass --overwrite_output_dir true to replace it.")
    adapter_base = json.loads((Path(adapter_path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if adapter_base and adapter_base != model_args.model_name_or_path:
        logger.warning("The adapter was trained on %s; merging it into %s.", adapter_base,
                       model_args.model_name_or_path)
    if model_args.dtype in (None, "auto", "float32"):
        logger.info("Merging in %s", model_args.dtype or "auto")
    base = load_model(model_args, quantize=False)
    merged = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    tokenizer = load_tokenizer(adapter_path, chat_template_path)
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.generation_config.eos_token_id = tokenizer.eos_token_id
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for name in ("chat_template.jinja", "instruction.txt", "run_config.json"):
        if (Path(adapter_path) / name).is_file():
            shutil.copy(Path(adapter_path) / name, tmp / name)
    write_manifest(tmp, base_model=model_args.model_name_or_path, adapter=str(adapter_path), dtype=model_args.dtype)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)
    return output_dir
