"""Fold a LoRA adapter into its base model and save it as a standalone 16-bit (or 32-bit) model."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from trl import ModelConfig

from .layout import LOG_HISTORY_FILE, RUN_CONFIG_FILE, read_json
from .manifest import publish_dir, read_manifest, tmp_dir_for, write_manifest
from .modelcard import write_model_card
from .modeling import dequantize_4bit_linears, load_model, load_tokenizer, merge_adapter_weights, resolve_dtype
from .preflight import check_adapter, check_free_disk, check_model_source
from .stage import check_output_name, reuse_or_make

logger = logging.getLogger(__name__)


def weights_bytes(model_name_or_path: str) -> int:
    folder = Path(model_name_or_path)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) if folder.is_dir() else 0


def merge_settings(model_args: ModelConfig, adapter_path: str, merge_base: str) -> dict:
    """What a merged model depends on. The adapter's own manifest changes whenever it is trained again, even in the
    same folder."""
    merged_into = "dequantized_4bit" if model_args.load_in_4bit and merge_base == "dequantized_4bit" else "original"
    return {"adapter": str(Path(adapter_path).resolve()), "base_model": model_args.model_name_or_path,
            "dtype": model_args.dtype, "merged_into": merged_into, "adapter_manifest": read_manifest(adapter_path)}


def merged_with(output_dir: Path) -> dict | None:
    """The settings a finished merged model in `output_dir` was made with; None when there is none (merge.py
    publishes it complete or not at all, manifest included)."""
    manifest = read_manifest(output_dir)
    if manifest is None or not any(Path(output_dir).glob("*.safetensors")):
        return None
    return {"adapter": manifest.get("adapter") and str(Path(manifest["adapter"]).resolve()),
            **{key: manifest.get(key) for key in ("base_model", "dtype", "merged_into", "adapter_manifest")}}


PARITY_TEXT = ("Summarize the following news article in one sentence.\n\nArticle:\nThe council approved a new "
               "cycle path on Monday. Work will start in the spring.\n\nSummary:\n")


def merge_adapter(model_args: ModelConfig, adapter_path: str | None, output_dir: str | Path,
                  overwrite: bool = False, chat_template_path: str | None = None,
                  merge_base: str = "dequantized_4bit") -> Path:
    """Merge the adapter into its base and write safetensors, tokenizer and generation config through a temporary
    folder. A QLoRA adapter (4-bit recipe) is merged by default into the 4-bit weights it was trained against,
    dequantized to the recipe's dtype (`merge_base="dequantized_4bit"`); `"original"` merges into the original 16-bit
    checkpoint. The manifest records which, and how far the merged model's logits are from the adapter's."""
    output_dir = Path(output_dir)
    check_adapter(adapter_path, model_args.model_name_or_path)
    check_model_source(model_args.model_name_or_path)
    check_output_name(output_dir)
    if reuse_or_make(output_dir, "a merged model", merged_with(output_dir),
                     merge_settings(model_args, adapter_path, merge_base), overwrite, occupied=output_dir.exists()):
        return output_dir
    # The merged copy is at most the size of the base's files (smaller when they are fp32 and the merge is 16-bit).
    check_free_disk(output_dir, weights_bytes(model_args.model_name_or_path) + 2**28, "the merged model")
    tokenizer = load_tokenizer(adapter_path, chat_template_path)
    probe = tokenizer(PARITY_TEXT, return_tensors="pt")["input_ids"]
    merged, reference, merged_into = merged_model(model_args, adapter_path, merge_base, probe)
    parity = _parity(reference, _logits(merged, probe))
    logger.info("Merged into the %s base weights; against the adapter on the %s base: max |logit diff| %.4g, "
                "top-1 agreement %.3f on %d tokens", merged_into, "4-bit" if model_args.load_in_4bit else "same",
                parity["max_abs_logit_diff"], parity["top1_agreement"], parity["tokens"])
    save_merged(merged, tokenizer, model_args, adapter_path, output_dir,
                dict(merged_into=merged_into, parity_vs_adapter=parity))
    return output_dir


def merged_model(model_args: ModelConfig, adapter_path: str, merge_base: str, probe):
    """(the merged model, the adapter's logits on `probe` to check it against, which weights it was merged into)."""
    from peft import PeftModel

    if model_args.load_in_4bit and merge_base == "dequantized_4bit":
        # The adapter learned to correct the 4-bit weights, not the original ones: adding it to the original
        # checkpoint scored 0.67 ROUGE-1 below the adapter on the 4-bit base (SmolLM2-135M, docs/quality.md).
        # The reference is the adapter unmerged on the same dequantized weights, not bitsandbytes' 4-bit forward: on
        # a CPU that kernel computes with its block scales rounded to bf16 (see dequantize_4bit_linears), a
        # difference that is not the merge's.
        model = PeftModel.from_pretrained(load_model(model_args), adapter_path)
        dequantize_4bit_linears(model)
        reference = _logits(model, probe)
        # the sum in fp32, rounded once to the weights' dtype; no stock path merges into dequantized weights
        return merge_adapter_weights(model, required=True), reference, "dequantized_4bit"
    # Merge in fp32 and cast once: adding the low-rank update to 16-bit weights would round it into 16 bits
    # first, and an update smaller than the weight's rounding step would vanish (a 3.4% logit gap in bf16).
    target = resolve_dtype(model_args.dtype)
    base = load_model(dataclasses.replace(model_args, dtype="float32") if target != "auto" else model_args,
                      quantize=False)
    model = PeftModel.from_pretrained(base, adapter_path)
    # the parity check compares with what the adapter was trained and evaluated on: the 4-bit base if quantized
    reference = _logits(PeftModel.from_pretrained(load_model(model_args), adapter_path)
                        if model_args.load_in_4bit else model, probe)
    merged = model.merge_and_unload()
    return (merged.to(target) if target != "auto" else merged), reference, "original"


def save_merged(merged, tokenizer, model_args: ModelConfig, adapter_path: str, output_dir: Path,
                provenance: dict) -> None:
    """The merged model, its tokenizer, the adapter's prompt files and records, a manifest and a card, written through
    a temporary folder renamed into place."""
    tmp = tmp_dir_for(output_dir)
    merged.generation_config.eos_token_id = tokenizer.eos_token_id
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for name in ("chat_template.jinja", "instruction.txt", RUN_CONFIG_FILE, LOG_HISTORY_FILE):
        if (Path(adapter_path) / name).is_file():
            shutil.copy(Path(adapter_path) / name, tmp / name)
    adapter_manifest = read_manifest(adapter_path) or {}
    write_manifest(tmp, config=read_json(Path(adapter_path) / RUN_CONFIG_FILE),
                   base_model=model_args.model_name_or_path, adapter=str(adapter_path), dtype=model_args.dtype,
                   dataset_fingerprint=adapter_manifest.get("dataset_fingerprint"),
                   prompt_hash=adapter_manifest.get("prompt_hash"), adapter_manifest=adapter_manifest or None,
                   **provenance)
    write_model_card(tmp, "merged", published=output_dir)
    publish_dir(tmp, output_dir)


def _logits(model, input_ids):
    import torch

    with torch.no_grad():
        return model(input_ids.to(model.device)).logits.float().cpu()


def _parity(reference, merged) -> dict:
    return {"tokens": int(reference.shape[1]),
            "max_abs_logit_diff": float((merged - reference).abs().max()),
            "top1_agreement": float((merged.argmax(-1) == reference.argmax(-1)).float().mean())}
