"""QLoRA supervised fine-tuning with TRL's SFTTrainer; saves the adapter with its tokenizer, prompt and config."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from accelerate import PartialState
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from .config import DataArguments
from .data import is_prepared, load_prepared, prepare_datasets, save_prepared
from .manifest import write_manifest
from .modeling import load_model, load_tokenizer, upcast_trainable_params
from .prompts import read_text

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
DATA_DIR = "data"


def resolve_data(data_args: DataArguments, training_args: SFTConfig, tokenizer):
    """Prepared splits: a folder written by prepare_data.py, else prepared now and saved under output_dir/data.

    Call under `main_process_first()`: the main process prepares, the others then find the folder complete.
    """
    if is_prepared(data_args.dataset_name):
        return load_prepared(data_args.dataset_name)
    target = Path(training_args.output_dir) / DATA_DIR
    if not is_prepared(target):
        dataset, stats = prepare_datasets(data_args, tokenizer, training_args.max_length, training_args.seed,
                                          training_args.dataset_num_proc)
        save_prepared(dataset, stats, target)
    return load_prepared(target)


def build_trainer(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    tokenizer = load_tokenizer(model_args.model_name_or_path, training_args.chat_template_path,
                               revision=model_args.model_revision)
    # TRL would otherwise re-apply chat_template_path itself; our tokenizer already carries the checked template.
    training_args.chat_template_path = None
    with PartialState().main_process_first():
        dataset = resolve_data(data_args, training_args, tokenizer)
    columns = ["prompt", "completion"]
    train_dataset = dataset["train"].select_columns(columns)
    eval_dataset = dataset["validation"].select_columns(columns) if training_args.eval_strategy != "no" else None
    model = load_model(model_args)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if training_args.fp16:
        cast = upcast_trainable_params(trainer.model)
        logger.info("fp16: kept %d trainable tensors in fp32 for the grad scaler", cast)
    return trainer


def train(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig) -> Path:
    """Train (resuming from the last checkpoint in output_dir if any) and save the adapter; returns its folder."""
    output_dir = Path(training_args.output_dir)
    adapter_dir = output_dir / ADAPTER_DIR
    template_path = training_args.chat_template_path
    trainer = build_trainer(data_args, training_args, model_args)
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if last:
        logger.info("Resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    if trainer.args.eval_strategy != "no":
        trainer.evaluate()
    tmp = output_dir / (ADAPTER_DIR + ".tmp")
    trainer.save_model(str(tmp))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(tmp))
        shutil.copy(template_path or "prompts/chat_template.jinja", tmp / "chat_template.jinja")
        instruction = read_text(data_args.instruction_path, "Instruction file")
        (tmp / "instruction.txt").write_text(instruction)
        config = {
            "data": dataclasses.asdict(data_args),
            "model": dataclasses.asdict(model_args),
            "training": json.loads(training_args.to_json_string()),
        }
        (tmp / "run_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        write_manifest(tmp, config=config, base_model=model_args.model_name_or_path,
                       dataset_fingerprint=trainer.train_dataset._fingerprint,
                       chat_template=trainer.processing_class.chat_template, instruction=instruction)
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        os.replace(tmp, adapter_dir)
    trainer.accelerator.wait_for_everyone()
    return adapter_dir

