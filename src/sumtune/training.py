"""QLoRA supervised fine-tuning with TRL's SFTTrainer: preflight, automatic resume, a non-finite loss guard, and an
adapter saved atomically with its tokenizer, prompt, config, loss curve and manifest."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

import torch
from accelerate import PartialState
from torch.utils.data import Sampler
from transformers import TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from . import patches
from .config import ConfigError, DataArguments, EvalArguments, RunError, config_summary
from .data import (
    check_prepared_budget,
    check_prepared_prompt,
    is_prepared,
    load_prepared,
    prepare_datasets,
    prepare_settings,
    prepared_stats,
    reuse_prepared,
    save_prepared,
    subsample,
)
from .layout import ADAPTER_DIR, DATA_DIR, LOG_HISTORY_FILE, RUN_CONFIG_FILE
from .manifest import (
    check_output_path,
    publish_dir,
    read_manifest,
    redact,
    tmp_dir_for,
    training_config,
    unfinished_path,
    write_atomic,
    write_manifest,
)
from .modelcard import write_model_card
from .modeling import (
    causal_attention_for_right_padded_training,
    checkpoint_every_n_layers,
    compile_decoder_layers_for_training,
    keep_4bit_weights_trainable_on_cpu,
    layer_norm_in_input_dtype,
    load_model,
    load_tokenizer,
    upcast_trainable_params,
)
from .preflight import (
    check_free_disk,
    check_lora_targets,
    check_model_source,
    check_precision,
    check_process_group,
    fsdp_enabled,
)
from .prompts import Prompt
from .stage import is_unfinished, refusal, reuse_or_make, settings_changes

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Settings that change what a resumed run computes: a checkpoint made with other values cannot be continued.
RESUME_KEYS = {
    "data": ("dataset_name", "dataset_config", "dataset_revision", "text_column", "summary_column",
             "max_train_samples", "instruction_path"),
    "model": ("model_name_or_path", "model_revision", "dtype", "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type",
              "use_bnb_nested_quant", "bnb_4bit_quant_storage", "use_peft", "lora_r", "lora_alpha", "lora_dropout",
              "lora_target_modules", "lora_modules_to_save", "use_rslora", "use_dora"),
    "training": ("learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs", "max_steps",
                 "per_device_train_batch_size", "gradient_accumulation_steps", "global_batch_size", "seed", "data_seed",
                 "optim", "weight_decay", "max_grad_norm", "max_length", "fp16", "bf16", "packing", "padding_free",
                 "completion_only_loss", "train_sampling_strategy"),
}
# The fp16 grad scaler skips a step with inf/NaN gradients and halves its scale; this many skips in a row take the
# scale from 2**16 below 2**-8, past any overflow the scaler can absorb.
FP16_MAX_CONSECUTIVE_SKIPS = 24


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest `checkpoint-N` whose trainer_state.json (the Trainer writes it last) says step N.

    A checkpoint killed mid-save has no such file, or a truncated one, and is skipped: resuming from it would load
    half an optimizer state.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT.match(path.name)
        if not match or not path.is_dir():
            continue
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            logger.warning("Ignoring incomplete checkpoint %s (killed while saving).", path)
            continue
        if state.get("global_step") == int(match.group(1)):
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


class NonFiniteGuard(TrainerCallback):
    """Stop at the first non-finite loss, or non-finite gradient outside fp16, before the optimizer applies it.

    The Trainer's `logging_nan_inf_filter` hides NaN losses from the logs, so without this a run can spend hours
    training on NaN weights. In fp16 the grad scaler skips steps with inf gradients by design; only a run of
    FP16_MAX_CONSECUTIVE_SKIPS skipped steps (the scaler has given up) counts as diverged there.
    """

    def __init__(self):
        self.bad_loss: float | None = None
        self.fp16_skips = 0

    def observe(self, loss: torch.Tensor) -> None:
        if self.bad_loss is None and not torch.isfinite(loss).all():
            self.bad_loss = float(loss.float().mean())

    def _stop(self, args, state, what: str) -> None:
        step = state.global_step + 1
        last = last_complete_checkpoint(args.output_dir)
        raise RunError(f"{what} at step {step}; training stopped before the optimizer applied it. Last good "
                       f"checkpoint: {last or 'none'}. Lower learning_rate or raise warmup_steps, check the data, "
                       "or use bf16 instead of fp16 where the GPU has it; then re-run (a new --output_dir starts "
                       "fresh, the same one resumes from that checkpoint).")

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.bad_loss is not None:
            self._stop(args, state, f"Non-finite loss ({self.bad_loss})")
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if not grads:
            return
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if finite:
            self.fp16_skips = 0
        elif not args.fp16:
            self._stop(args, state, "Non-finite gradient norm")
        else:
            self.fp16_skips += 1
            if self.fp16_skips >= FP16_MAX_CONSECUTIVE_SKIPS:
                self._stop(args, state, f"{self.fp16_skips} fp16 overflow steps in a row (the grad scaler gave up)")


class CheckpointingSettings(TrainerCallback):
    """`checkpoint_every_n_layers` and `uncheckpointed_layers`, applied when training starts: the Trainer turns
    checkpointing on for every layer at the start of `train()`, after anything done to the model before."""

    def __init__(self, every_n_layers: int, uncheckpointed: int = 0):
        self.every_n_layers, self.uncheckpointed = every_n_layers, uncheckpointed

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        checkpointed, layers = checkpoint_every_n_layers(model, self.every_n_layers, self.uncheckpointed)
        logger.info("Gradient checkpointing on %d of %d decoder layers (every %d-th, none of the last %d).",
                    checkpointed, layers, self.every_n_layers, self.uncheckpointed)


class RankInterleavedSampler(Sampler):
    """A length-grouped order re-dealt so that the ranks' micro-batches of each step are equally long.

    Under DDP, accelerate deals consecutive micro-batches of the sampler's order to the ranks (rank r gets batch
    k * ranks + r). `LengthGroupedSampler` sorts each megabatch longest first, so at every step rank 0 gets the longer
    batch and the others wait for it: on XSum's lengths the mean rank does ~98% of the slowest rank's padded tokens
    (bench/rank_balance.py). Here each run of `ranks` consecutive micro-batches (sorted rows r0 >= r1 >= ...) is dealt
    row by row instead: rank r gets rows r, r + ranks, r + 2 ranks, ..., so every rank's longest row is one of the
    `ranks` longest of the step. The step trains the same rows as before; with one process the order is unchanged.
    Neither transformers' sampler nor its `batch_rebalance` strategy (random rows per step, more padding) does this.
    """

    def __init__(self, sampler, batch_size: int, ranks: int):
        self.sampler, self.batch_size, self.ranks = sampler, batch_size, ranks

    def __len__(self) -> int:
        return len(self.sampler)

    # Under the Trainer (accelerate's seedable-sampler mode) the ranks draw the same order because each seeds its global
    # RNG alike, as for the unwrapped sampler. Without that mode accelerate seeds and shares a sampler's `generator`:
    # pass it through so the wrapped sampler gets it.
    @property
    def generator(self):
        return self.sampler.generator

    @generator.setter
    def generator(self, value):
        self.sampler.generator = value

    def __iter__(self):
        order = list(self.sampler)
        step = self.batch_size * self.ranks
        for start in range(0, len(order), step):
            block = order[start:start + step]
            if len(block) < step:  # an incomplete last step: accelerate deals it as it is
                yield from block
            else:
                for rank in range(self.ranks):
                    yield from block[rank::self.ranks]


class GuardedSFTTrainer(SFTTrainer):
    """SFTTrainer that shows each micro-batch's loss to the NonFiniteGuard (callbacks never see the loss), and under
    DDP deals length-grouped batches so that the ranks' batches of a step are equally long (RankInterleavedSampler).
    """

    def __init__(self, *args, guard: NonFiniteGuard, **kwargs):
        super().__init__(*args, callbacks=[guard], **kwargs)
        self.guard = guard

    def create_model_card(self, *args, **kwargs):
        """TRL writes a boilerplate card to output_dir at every checkpoint; ours is written beside the adapter."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.guard.observe(loss)
        return loss

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if (isinstance(sampler, LengthGroupedSampler) and self.args.world_size > 1
                and patches.enabled("rank_interleaved_sampler")):
            return RankInterleavedSampler(sampler, self.args.per_device_train_batch_size, self.args.world_size)
        return sampler


def prepared_path(data_args: DataArguments, training_args: SFTConfig) -> Path:
    if is_prepared(data_args.dataset_name):
        return Path(data_args.dataset_name)
    return Path(training_args.output_dir) / DATA_DIR


def resolve_data(data_args: DataArguments, training_args: SFTConfig, tokenizer, overwrite: bool = False):
    """Prepared splits: a folder written by prepare_data.py, else prepared now and saved under output_dir/data (and
    reused by a later run only if prepared with the same settings; `overwrite` prepares it again).

    Call under `main_process_first()`: the main process prepares, the others then find the folder complete.
    """
    target = prepared_path(data_args, training_args)
    prompt = Prompt.load(tokenizer, data_args.instruction_path)
    if is_prepared(data_args.dataset_name):
        # prepare_data.py's rows carry the prompt they were rendered with: training on them with another template or
        # instruction would teach one prompt while the adapter ships (and evaluate.py renders) the other
        check_prepared_prompt(target, prompt.hash)
    else:
        settings = prepare_settings(data_args, prompt, training_args.max_length, training_args.seed)
        if not reuse_prepared(target, settings, overwrite and PartialState().is_main_process):
            dataset, stats = prepare_datasets(data_args, tokenizer, training_args.max_length, training_args.seed,
                                              training_args.dataset_num_proc)
            save_prepared(dataset, stats, target)
    check_prepared_budget(target, training_args.max_length)
    return load_prepared(target)


def resolve_global_batch(training_args: SFTConfig) -> int:
    """Derive gradient_accumulation_steps from `global_batch_size` when the recipe sets it; log the global batch."""
    processes = training_args.world_size
    per_step = training_args.per_device_train_batch_size * processes
    wanted = getattr(training_args, "global_batch_size", None)
    if wanted is not None:
        if wanted % per_step:
            raise ConfigError(f"`global_batch_size` ({wanted}) is not a multiple of per_device_train_batch_size "
                              f"({training_args.per_device_train_batch_size}) x {processes} processes = {per_step}: "
                              "change global_batch_size, per_device_train_batch_size or the number of processes.")
        training_args.gradient_accumulation_steps = wanted // per_step
    total = per_step * training_args.gradient_accumulation_steps
    logger.info("Global batch: %d per device x %d accumulation steps x %d processes = %d sequences per optimizer step",
                training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps, processes, total)
    return total


def build_trainer(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig,
                  eval_args: EvalArguments | None = None) -> SFTTrainer:
    check_precision(training_args, model_args, training=True)
    check_model_source(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_args.model_name_or_path, training_args.chat_template_path,
                               revision=model_args.model_revision)
    # TRL would otherwise re-apply chat_template_path itself; our tokenizer already carries the checked template.
    training_args.chat_template_path = None
    with PartialState().main_process_first():
        dataset = resolve_data(data_args, training_args, tokenizer,
                               overwrite=bool(eval_args and eval_args.overwrite_output_dir))
    columns = ["prompt", "completion"]
    train_dataset = dataset["train"].select_columns(columns)
    eval_dataset = dataset["validation"].select_columns(columns) if training_args.eval_strategy != "no" else None
    resolve_global_batch(training_args)
    model = load_model(model_args)
    if training_args.bf16:
        layer_norm_in_input_dtype(model)
    if training_args.causal_only_training_attention:  # padding-free batches have no mask: unchanged
        causal_attention_for_right_padded_training(model)
    trainer = GuardedSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        guard=NonFiniteGuard(),
    )
    if training_args.gradient_checkpointing and (training_args.checkpoint_every_n_layers > 1
                                                 or training_args.uncheckpointed_layers):
        trainer.add_callback(CheckpointingSettings(training_args.checkpoint_every_n_layers,
                                                   training_args.uncheckpointed_layers))
    if not torch.cuda.is_available():
        keep_4bit_weights_trainable_on_cpu(trainer.model)
    # TRL casts QLoRA adapters to bf16. Keep them in fp32: fp16's grad scaler cannot unscale bf16 gradients, bf16
    # master weights lose small updates, and PEFT reloads a checkpoint's adapter in fp32, so a resumed run would
    # otherwise continue in another precision than an uninterrupted one.
    upcast_trainable_params(trainer.model)
    if training_args.compile_decoder_layers:
        compile_decoder_layers_for_training(trainer.model)
    if eval_args is not None and eval_args.rouge_eval_samples and eval_dataset is not None:
        if fsdp_enabled():
            logger.warning("rouge_eval_samples is not supported under FSDP; evaluate.py scores the adapter instead.")
        else:
            # imported here: training alone needs no generation or rouge_score
            from .callbacks import RougeCallback

            subset = subsample(dataset["validation"], eval_args.rouge_eval_samples, training_args.seed)
            # The recipe's decoding without MBR, which would multiply every evaluation's generation by its
            # candidates: the curve follows the model, evaluate.py scores the decoding.
            decoding = dataclasses.replace(eval_args.decoding, mbr_candidates=1)
            prompt = Prompt.load(trainer.processing_class, data_args.instruction_path)
            prompts = [prompt.for_generation(article, training_args.max_length, decoding.max_new_tokens)
                       for article in subset["document"]]
            keep = [i for i, p in enumerate(prompts) if p is not None]
            trainer.add_callback(RougeCallback(trainer, [prompts[i] for i in keep],
                                               [subset["summary"][i] for i in keep], decoding))
    return trainer


def run_config(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict:
    """The resolved configuration, secrets redacted, as saved beside the adapter."""
    return redact({
        "data": dataclasses.asdict(data_args),
        "model": dataclasses.asdict(model_args),
        "training": training_config(training_args),
    })


def resume_settings(config: dict) -> dict:
    """The RESUME_KEYS part of a run config: what a checkpoint or a finished adapter is compared by."""
    return {group: {key: (config.get(group) or {}).get(key) for key in keys} for group, keys in RESUME_KEYS.items()}


def _check_resume_config(saved_path: Path, config: dict, checkpoint: Path) -> None:
    try:
        saved = resume_settings(json.loads(saved_path.read_text()))
    except (OSError, json.JSONDecodeError):
        return  # a checkpoint from before this file existed: nothing to compare against
    if settings_changes(saved, resume_settings(config)):
        raise refusal(saved_path.parent, f"a checkpoint ({checkpoint.name})", saved, resume_settings(config),
                      resumable=True)


def finished_adapter(adapter_dir: Path, config: dict, data_path: Path, overwrite: bool = False) -> bool:
    """True when `adapter_dir` holds a finished adapter trained with these settings on this data (a re-run then
    reuses it); a finished adapter from other settings or data is an error naming what changed."""
    settings, made_with = resume_settings(config), None
    if (adapter_dir / "adapter_model.safetensors").is_file():
        try:
            made_with = resume_settings(json.loads((adapter_dir / RUN_CONFIG_FILE).read_text()))
        except (OSError, json.JSONDecodeError):
            made_with = resume_settings({})  # no record of its settings: every key counts as changed
        fingerprint = (read_manifest(adapter_dir) or {}).get("dataset_fingerprint")
        if is_prepared(data_path) and fingerprint:  # the training rows, whatever settings prepared them
            made_with["dataset_fingerprint"] = fingerprint
            settings["dataset_fingerprint"] = prepared_stats(data_path).get("train", {}).get("fingerprint")
    return reuse_or_make(adapter_dir, "an adapter", made_with, settings, overwrite)


def preflight(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig,
              overwrite: bool = False) -> Path | None:
    """Everything that can be checked before a model is loaded; returns the checkpoint to resume from, if any (none
    with `overwrite`: the run starts over)."""
    output_dir = Path(training_args.output_dir)
    check_output_path(output_dir)
    check_precision(training_args, model_args, training=True)
    check_process_group(training_args.world_size, "train alone on its own copy of the data", "train.py")
    check_model_source(model_args.model_name_or_path)
    check_lora_targets(model_args)
    if training_args.uncheckpointed_layers:  # before data preparation writes anything
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
        layers = getattr(config, "num_hidden_layers", None)
        if layers is not None and training_args.uncheckpointed_layers > layers:
            raise ConfigError(f"`uncheckpointed_layers` ({training_args.uncheckpointed_layers}) is more than the "
                              f"model's {layers} decoder layers: set it to at most {layers}.")
    if training_args.resume_from_checkpoint:
        raise ConfigError("Leave `resume_from_checkpoint` unset: train.py resumes from the last complete checkpoint "
                          "in --output_dir by itself.")
    dataset = Path(data_args.dataset_name)
    if is_unfinished(dataset):
        raise ConfigError(f"{dataset} is an unfinished prepared dataset (a `.tmp` folder): run `make data` again.")
    check_free_disk(output_dir)
    if training_args.save_strategy == "steps" and training_args.save_steps % max(training_args.logging_steps, 1):
        logger.warning("save_steps (%s) is not a multiple of logging_steps (%s): after a resume the first logged "
                       "loss averages fewer steps than in an uninterrupted run.", training_args.save_steps,
                       training_args.logging_steps)
    checkpoint = None if overwrite else last_complete_checkpoint(output_dir)
    if checkpoint is not None:
        _check_resume_config(output_dir / RUN_CONFIG_FILE, run_config(data_args, training_args, model_args),
                             checkpoint)
    return checkpoint


def train(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig,
          eval_args: EvalArguments | None = None) -> Path:
    """Train (resuming from the last complete checkpoint in output_dir if any) and save the adapter; returns its
    folder. The adapter folder appears only when complete (built in `adapter.tmp`, then renamed)."""
    output_dir = Path(training_args.output_dir)
    adapter_dir = output_dir / ADAPTER_DIR
    config = run_config(data_args, training_args, model_args)
    overwrite = bool(eval_args and eval_args.overwrite_output_dir)
    if finished_adapter(adapter_dir, config, prepared_path(data_args, training_args), overwrite):
        return adapter_dir
    checkpoint = preflight(data_args, training_args, model_args, overwrite)
    logger.info("Config: %s (every setting: run_config.json)", config_summary(data_args, training_args, model_args))
    is_main = PartialState().is_main_process
    if is_main and overwrite:
        # The replaced run's checkpoints would be resumed by a later re-run and rotated with the new ones.
        for stale in output_dir.glob("checkpoint-*"):
            shutil.rmtree(stale)
    if is_main and checkpoint is None:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(output_dir / RUN_CONFIG_FILE, json.dumps(config, indent=2, default=str) + "\n")
    trainer = build_trainer(data_args, training_args, model_args, eval_args)
    if checkpoint is not None:
        logger.info("Resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    evaluated = [e["step"] for e in trainer.state.log_history if "eval_loss" in e]
    if trainer.args.eval_strategy != "no" and (not evaluated or evaluated[-1] != trainer.state.global_step):
        trainer.evaluate()  # the final adapter's eval loss, unless the last step was just evaluated
    tmp = tmp_dir_for(adapter_dir) if is_main else unfinished_path(adapter_dir)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(tmp))
        # the template training rendered with (BOS-prefixed where the tokenizer starts texts with BOS)
        (tmp / "chat_template.jinja").write_text(trainer.processing_class.chat_template, encoding="utf-8")
        prompt = Prompt.load(trainer.processing_class, data_args.instruction_path)
        (tmp / "instruction.txt").write_text(prompt.instruction)
        (tmp / RUN_CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
        (tmp / LOG_HISTORY_FILE).write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")
        data_path = prepared_path(data_args, training_args)
        stats = prepared_stats(data_path)
        write_manifest(tmp, config=config, base_model=model_args.model_name_or_path,
                       dataset=str(data_path), dataset_fingerprint=stats.get("train", {}).get("fingerprint"),
                       global_step=trainer.state.global_step, resumed_from=str(checkpoint) if checkpoint else None,
                       prompt_hash=prompt.hash)
        write_model_card(tmp, "adapter", published=adapter_dir)  # replaces the boilerplate card PEFT saved there
        publish_dir(tmp, adapter_dir)
    trainer.accelerator.wait_for_everyone()
    return adapter_dir
