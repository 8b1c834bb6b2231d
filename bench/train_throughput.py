"""Training throughput of the recipes against a stock TRL script, on a Phi-2-shaped random-weight model.

One invocation builds the model (Phi-2's config and tokenizer from --assets, random weights, fp16 safetensors) and
XSum-length data (the 500-row sample through sumtune's own budget fitting), then trains every variant in its own
process on the same rows, seed and global batch, and appends one JSON object per variant to --results.

    python bench/train_throughput.py --assets .device_assets                      # the default variants, on a GPU
    python bench/train_throughput.py --assets .device_assets --variants stock-fp16,qlora,qlora-t4
    python bench/train_throughput.py --assets ../shared --tiny --global_batch 4 --warmup 1 --steps 1 \
        --variants stock-fp16,qlora --results /tmp/t.jsonl                       # CPU smoke test of the code paths
    python bench/train_throughput.py --assets .device_assets --variants qlora,qlora-ddp --gpus 2 --same_rows \\
        --warmup 2 --steps 28 --repeats 3    # DDP vs 1 GPU over the same rows, alternated, medians at the end

Tokens are non-padding tokens (TRL's own count: attention_mask sum, or the packed length when padding-free), summed
over the optimizer steps after --warmup; peak is torch.cuda.max_memory_reserved of the variant's process. The figures
and what they mean: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/test_gpu.py loads this file by path

from common import append_rows, log, run_context, sample_file, save_random_phi, synchronize  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]
T4_GIB = 15.0  # a T4 shows ~15 GiB of its 16 GB to CUDA; emulated with set_per_process_memory_fraction

CAUSAL = ["--causal_only_training_attention", "true"]  # no padding mask in training: SDPA's flash kernel
COMPILE = ["--compile_decoder_layers", "true"]  # torch.compile of each decoder layer in training (warm up >= 2 steps)

# name -> how it is trained. `stock`: a plain SFTTrainer script ("fp16"/"bf16"); `recipe`: through sumtune with CLI
# `args`; `patch`: bench-only changes applied after the trainer is built (`apply_patches`); `cap`: GiB cap; `data`:
# "real", "long" or "large" (DATA_DIRS).
VARIANTS = {
    "stock-fp16": {"stock": "fp16", "reference": True},
    "stock-bf16": {"stock": "bf16"},
    # The stock script as a competent user tunes it: bf16, length-grouped batches, and either no recomputation at the
    # largest micro-batch that fits the card (16, else 8: the honest baseline for "faster than TRL") or checkpointing
    # at micro-batch 16 (the fastest stock setting under 40 GiB). The seed's recipe is stock-fp16.
    "stock-bf16-tuned": {"stock": "bf16", "tuned": {"micro": 16, "checkpointing": False}},
    "stock-bf16-tuned-bs8": {"stock": "bf16", "tuned": {"micro": 8, "checkpointing": False}},
    "stock-bf16-tuned-gc": {"stock": "bf16", "tuned": {"micro": 16, "checkpointing": True}},
    "stock-fp16-large": {"stock": "fp16", "reference": True, "data": "large"},  # the reference on qlora-large's rows
    "qlora": {"recipe": "recipes/phi-2/qlora.yaml"},
    "qlora-40gb": {"recipe": "recipes/phi-2/qlora-40gb.yaml"},  # = qlora-compile-keep10 as a recipe
    "qlora-t4": {"recipe": "recipes/phi-2/qlora-t4.yaml", "cap": T4_GIB},
    "qlora-t4-long": {"recipe": "recipes/phi-2/qlora-t4.yaml", "cap": T4_GIB, "data": "long"},
    "qlora-long": {"recipe": "recipes/phi-2/qlora.yaml", "data": "long"},
    # The train split repeated to LARGE_ROWS rows: length-grouped megabatches as large as on a real dataset (see
    # bench/rank_balance.py: with 450 rows they hold 3 batches, and DDP's two ranks get batches of unequal length).
    # Each megabatch is sorted longest first, so a run shorter than 50 steps of 32 trains long rows only: its tokens/s
    # is not XSum's mix (docs/performance.md gives both); DDP vs 1 GPU stays like for like.
    "qlora-large": {"recipe": "recipes/phi-2/qlora.yaml", "data": "large"},
    "qlora-large-causal": {"recipe": "recipes/phi-2/qlora.yaml", "data": "large",
                           "args": CAUSAL},
    # The bf16 recipe with autocast's fp32 LayerNorm (sumtune.modeling.layer_norm_in_input_dtype undone)
    "qlora-autocast-ln": {"recipe": "recipes/phi-2/qlora.yaml", "patch": ["autocast-ln"]},
    # SDPA without cuDNN attention, which builds an execution plan on the CPU for each new sequence length
    # (bench/results/profile_train_bs16_nogc_2026-11-27.txt); PyTorch's own kernels instead.
    "qlora-no-cudnn-sdp": {"recipe": "recipes/phi-2/qlora.yaml", "patch": ["no-cudnn-sdp"]},
    # Training without the padding mask (sumtune.modeling.causal_attention_for_right_padded_training): flash attention
    "qlora-causal": {"recipe": "recipes/phi-2/qlora.yaml", "args": CAUSAL},
    "qlora-t4-causal": {"recipe": "recipes/phi-2/qlora-t4.yaml", "cap": T4_GIB,
                        "args": CAUSAL},
    "qlora-t4-long-causal": {"recipe": "recipes/phi-2/qlora-t4.yaml", "cap": T4_GIB, "data": "long",
                             "args": CAUSAL},
    # The recipe with its decoder layers compiled (sumtune.modeling.compile_decoder_layers_for_training)
    "qlora-compile": {"recipe": "recipes/phi-2/qlora.yaml", "args": COMPILE},
    "qlora-large-compile": {"recipe": "recipes/phi-2/qlora.yaml", "data": "large", "args": COMPILE},
    "qlora-t4-compile": {"recipe": "recipes/phi-2/qlora-t4.yaml", "cap": T4_GIB, "args": COMPILE},
    # Compiled, and the last 10 decoder layers keep their activations, not recomputed (uncheckpointed_layers)
    "qlora-compile-keep10": {"recipe": "recipes/phi-2/qlora.yaml", "args": [*COMPILE, "--uncheckpointed_layers", "10"]},
    # One GPU at the FSDP recipe's per-GPU settings: the baseline of the multi-GPU variants below
    "qlora-fsdp-settings": {"recipe": "recipes/phi-2/qlora-fsdp.yaml"},
    # LoRA on the 16-bit base (no 4-bit dequantization in any forward), at qlora-40gb's speed settings
    "lora-40gb": {"recipe": "recipes/phi-2/lora-40gb.yaml"},
    # The T4 recipe with compiled layers, no padding mask and no dropout, under the same cap (what qlora-t4.yaml sets;
    # `qlora-t4` runs the recipe file itself)
    "qlora-t4-compile-causal-nodrop": {"recipe": "recipes/phi-2/qlora-t4.yaml", "cap": T4_GIB,
                                       "args": [*COMPILE, *CAUSAL, "--lora_dropout", "0"]},
    # The 40 GB recipe with SDPA's flash kernel inside the compiled layers instead of cuDNN's (which SDPA picks
    # there), and with more layers keeping their activations (the recipe's peak leaves room under 40 GiB)
    "qlora-40gb-no-cudnn-sdp": {"recipe": "recipes/phi-2/qlora-40gb.yaml", "patch": ["no-cudnn-sdp"]},
    "qlora-40gb-keep14": {"recipe": "recipes/phi-2/qlora-40gb.yaml", "args": ["--uncheckpointed_layers", "14"]},
    "qlora-40gb-keep12": {"recipe": "recipes/phi-2/qlora-40gb.yaml", "args": ["--uncheckpointed_layers", "12"]},
    # Nothing recomputed at the recipe's batch of 32 (more memory than an 80 GB card holds): what its kernels give
    # without any recomputation, a bound on what more memory could buy this recipe
    "qlora-40gb-keep32": {"recipe": "recipes/phi-2/qlora-40gb.yaml", "args": ["--uncheckpointed_layers", "32"]},
    # PyTorch's fused AdamW (one kernel for all LoRA tensors, float32 states) instead of bitsandbytes' paged 8-bit one,
    # which launches kernels per tensor; LoRA's optimizer states are small enough to keep in fp32
    "qlora-40gb-fused-adamw": {"recipe": "recipes/phi-2/qlora-40gb.yaml", "args": ["--optim", "adamw_torch_fused"]},
    "qlora-40gb-keep12-fused-adamw": {"recipe": "recipes/phi-2/qlora-40gb.yaml",
                                      "args": ["--uncheckpointed_layers", "12", "--optim", "adamw_torch_fused"]},
}
BF16 = ["--config", "recipes/phi-2/qlora.yaml"]
FP16 = ["--config", "recipes/phi-2/qlora-t4.yaml"]
NOGC = ["--gradient_checkpointing", "false"]
PF = ["--padding_free", "true"]
GROUP = ["--train_sampling_strategy", "group_by_length"]
NODROP = ["--lora_dropout", "0"]
SAC = ["--gradient_checkpointing_kwargs", '{"use_reentrant": false, "selective": true}']  # TRL: keep attention


def gc_every(n: int) -> list[str]:  # checkpoint every n-th decoder layer (sumtune's checkpoint_every_n_layers)
    return ["--checkpoint_every_n_layers", str(n)]


def bs(n: int) -> list[str]:
    return ["--per_device_train_batch_size", str(n)]


# Names: precision, micro-batch, checkpointing (gc/nogc), pf = padding-free, grouped = length-grouped sampler,
# gelu = fused tanh GELU (every recipe variant has it: sumtune.modeling.load_model applies FUSED_ACTIVATIONS),
# nodrop = lora_dropout 0, long = the longest rows only (memory worst case), gcN = checkpointing on every N-th decoder
# layer only, sac = TRL's selective checkpointing (attention output kept), causal = no padding mask in training
# (causal_only_training_attention), compile = torch.compile (TRL's whole model, or sumtune's decoder layers).
LEVERS = {
    "bf16-bs8-gc": BF16 + bs(8),
    "bf16-bs16-gc": BF16 + bs(16),
    "bf16-bs16-gc-grouped": BF16 + bs(16) + GROUP,
    "bf16-bs16-gc-pf": BF16 + bs(16) + PF,
    "bf16-bs4bins-gc-pack": BF16 + bs(4) + ["--packing", "true"],
    "bf16-bs8-nogc-grouped": BF16 + bs(8) + GROUP + NOGC,
    "bf16-bs4-nogc-grouped": BF16 + bs(4) + GROUP + NOGC,
    "bf16-bs8-nogc-grouped-gelu": BF16 + bs(8) + GROUP + NOGC,
    "bf16-bs8-nogc-grouped-gelu-nodrop": BF16 + bs(8) + NODROP + GROUP + NOGC,
    "bf16-bs8-nogc-grouped-gelu-compile": BF16 + bs(8) + ["--torch_compile", "true"] + GROUP + NOGC,
    "bf16-bs8-nogc-pf": BF16 + bs(8) + PF + NOGC,
    "bf16-bs8-nogc-pf-gelu": BF16 + bs(8) + PF + NOGC,
    "bf16-bs8-nogc-pf-gelu-nodrop": BF16 + bs(8) + NODROP + PF + NOGC,
    "bf16-bs16-nogc-pf-gelu": BF16 + bs(16) + PF + NOGC,
    "bf16-bs16-nogc-grouped-gelu": BF16 + bs(16) + GROUP + NOGC,
    "bf16-bs8-nogc-pf-gelu-compile": BF16 + bs(8) + ["--torch_compile", "true"] + PF + NOGC,
    # Larger micro-batches with checkpointing: fewer kernel launches per token (the step is CPU-bound at batch 16).
    "bf16-bs32-gc-grouped": BF16 + bs(32) + GROUP,
    "bf16-bs48-gc-grouped": BF16 + bs(48) + GROUP,
    "bf16-bs64-gc-grouped": BF16 + bs(64) + GROUP,
    "bf16-bs64-gc-grouped-nodrop": BF16 + bs(64) + NODROP + GROUP,
    "bf16-bs32-gc-grouped-compile": BF16 + bs(32) + ["--torch_compile", "true"] + GROUP,
    # Recompute less: no LoRA dropout, fewer checkpointed layers, SAC.
    "bf16-bs32-gc-grouped-nodrop": BF16 + bs(32) + NODROP + GROUP,
    "bf16-bs16-nogc-grouped-nodrop": BF16 + bs(16) + NODROP + GROUP + NOGC,
    "bf16-bs32-gc2-grouped": BF16 + bs(32) + gc_every(2) + GROUP,
    "bf16-bs32-gc2-grouped-nodrop": BF16 + bs(32) + gc_every(2) + NODROP + GROUP,
    "bf16-bs16-gc2-grouped-nodrop": BF16 + bs(16) + gc_every(2) + NODROP + GROUP,
    "bf16-bs16-gc4-grouped-nodrop": BF16 + bs(16) + gc_every(4) + NODROP + GROUP,
    "bf16-bs32-sac-grouped-nodrop": BF16 + bs(32) + SAC + NODROP + GROUP,
    "bf16-bs8-nogc-grouped-nodrop": BF16 + bs(8) + NODROP + GROUP + NOGC,
    "bf16-bs16-nogc-grouped-nodrop-causal": BF16 + bs(16) + NODROP + GROUP + NOGC + CAUSAL,
    "bf16-bs8-nogc-grouped-nodrop-causal": BF16 + bs(8) + NODROP + GROUP + NOGC + CAUSAL,
    "bf16-bs16-gc2-grouped-nodrop-causal": BF16 + bs(16) + gc_every(2) + NODROP + GROUP + CAUSAL,
    "bf16-bs32-gc2-grouped-nodrop-causal": BF16 + bs(32) + gc_every(2) + NODROP + GROUP + CAUSAL,
    "bf16-bs16-gc2-grouped-nodrop-causal-compile": BF16 + bs(16) + gc_every(2) + NODROP + GROUP + CAUSAL + COMPILE,
    "bf16-bs16-nogc-grouped-nodrop-causal-compile": BF16 + bs(16) + NODROP + GROUP + NOGC + CAUSAL + COMPILE,
    "bf16-bs8-nogc-grouped-nodrop-causal-compile": BF16 + bs(8) + NODROP + GROUP + NOGC + CAUSAL + COMPILE,
    "bf16-bs64-gc-grouped-nodrop-causal-compile": BF16 + bs(64) + NODROP + GROUP + CAUSAL + COMPILE,
    "t4-bs16-gc-grouped": FP16 + bs(16) + GROUP,
    "fp16-bs8-nogc-pf-gelu": FP16 + bs(8) + PF + NOGC,
    "t4-bs8-gc-pf": FP16 + bs(8) + PF,
    "t4-bs8-gc-grouped": FP16 + bs(8) + GROUP,
    "t4-bs16-gc-grouped-gelu": FP16 + bs(16) + GROUP,
    "t4-bs4-nogc-pf-gelu": FP16 + bs(4) + PF + NOGC,
    "t4-bs8-gc-pf-long": FP16 + bs(8) + PF,
}
for _name, _args in LEVERS.items():
    # Names without "nodrop" keep the LoRA dropout they were measured with (0.05), whatever the recipe says now.
    _drop = [] if "nodrop" in _name else ["--lora_dropout", "0.05"]
    VARIANTS[_name] = {"recipe": _args[1], "args": [*_args[2:], *_drop], "patch": [],
                       "cap": T4_GIB if _name.startswith("t4-") else None,
                       "data": "long" if "-long" in _name else "real"}
VARIANTS["bf16-bs16-nogc-grouped-nodrop-no-cudnn-sdp"] = {**VARIANTS["bf16-bs16-nogc-grouped-nodrop"],
                                                         "patch": ["no-cudnn-sdp"]}
# Several GPUs of one machine: `launch` is the accelerate config the child runs under, one process per GPU.
# Gradient accumulation stays what it is on one GPU, so each GPU does the same work per step as the 1-GPU variant.
VARIANTS |= {
    "qlora-ddp": {"recipe": "recipes/phi-2/qlora.yaml", "launch": "accelerate_configs/multi_gpu.yaml"},
    "qlora-ddp-large": {"recipe": "recipes/phi-2/qlora.yaml", "launch": "accelerate_configs/multi_gpu.yaml",
                        "data": "large"},
    "qlora-ddp-large-causal": {"recipe": "recipes/phi-2/qlora.yaml", "launch": "accelerate_configs/multi_gpu.yaml",
                               "data": "large", "args": CAUSAL},
    "qlora-ddp-large-compile": {"recipe": "recipes/phi-2/qlora.yaml", "launch": "accelerate_configs/multi_gpu.yaml",
                                "data": "large", "args": COMPILE},
    "qlora-fsdp": {"recipe": "recipes/phi-2/qlora-fsdp.yaml", "launch": "accelerate_configs/fsdp_qlora.yaml"},
    # DDP at the FSDP recipe's per-GPU settings: the memory comparison
    "qlora-fsdp-settings-ddp": {"recipe": "recipes/phi-2/qlora-fsdp.yaml",
                                "launch": "accelerate_configs/multi_gpu.yaml"},
    # CPU smoke test of the launch path (with --tiny)
    "qlora-ddp-cpu": {"recipe": "recipes/phi-2/qlora.yaml", "args": ["--use_cpu", "true"],
                      "launch": "accelerate_configs/multi_cpu.yaml"},
    "qlora-ddp-cpu-large": {"recipe": "recipes/phi-2/qlora.yaml", "args": ["--use_cpu", "true"],
                            "launch": "accelerate_configs/multi_cpu.yaml", "data": "large"},
}


# ---------------------------------------------------------------- assets: model and data, built once per invocation


DATA_DIRS = {"real": "data", "long": "data-long", "large": "data-large"}
LARGE_ROWS = 6_400  # LengthGroupedSampler's megabatches reach their cap (50 batches of 32) from 6,400 rows
PACKAGES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets")


def build_assets(assets: Path, work: Path, tiny: bool) -> tuple[Path, Path, Path]:
    """Random-weight Phi-2 (or a 2-layer stand-in with --tiny) with the Phi-2 tokenizer, plus prepared data folders.

    `assets` holds phi-2/ and xsum_test_sample_500.jsonl (directly or under data/, as ../shared does)."""
    import torch

    model_dir = work / "phi-2-random"
    data_dir, long_dir, large_dir = (work / DATA_DIRS[kind] for kind in ("real", "long", "large"))
    if not (model_dir / "model.safetensors.index.json").is_file() and not (model_dir / "model.safetensors").is_file():
        save_random_phi(assets, model_dir, tiny, torch.float16)
        log(f"model saved to {model_dir}")
    if not (data_dir / "stats.json").is_file():
        prepare_rows(sample_file(assets), model_dir, data_dir, long_dir)
    if not (large_dir / "stats.json").is_file():
        repeat_rows(data_dir, large_dir)
    return model_dir, data_dir, long_dir


def prepare_rows(sample: Path, model_dir: Path, data_dir: Path, long_dir: Path) -> None:
    """The sample fitted to max_length 1024 by sumtune.data, and its 64 longest training rows alone."""
    from sumtune.config import DataArguments
    from sumtune.data import prepare_datasets, save_prepared
    from sumtune.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir), "prompts/chat_template.jinja")
    dataset, stats = prepare_datasets(DataArguments(dataset_name=str(sample)), tokenizer, 1024, 42)
    save_prepared(dataset, stats, data_dir)
    # Worst case for memory: the longest rows only (every one near max_length).
    order = sorted(range(len(dataset["train"])), key=lambda i: -dataset["train"][i]["num_tokens"])
    dataset["train"] = dataset["train"].select(order[:64])
    save_prepared(dataset, stats, long_dir)
    log(f"data: {json.dumps(stats['train'])}")


def repeat_rows(data_dir: Path, large_dir: Path) -> None:
    """The training rows repeated to LARGE_ROWS, so length-grouped megabatches are as large as on a real dataset."""
    from datasets import load_from_disk

    from sumtune.data import save_prepared

    dataset = load_from_disk(str(data_dir))
    rows = len(dataset["train"])
    dataset["train"] = dataset["train"].select([i % rows for i in range(LARGE_ROWS)])
    stats = json.loads((data_dir / "stats.json").read_text())
    stats["bench_note"] = f"train split: the {rows} rows repeated to {LARGE_ROWS}"
    save_prepared(dataset, stats, large_dir)


# ------------------------------------------------------------------------------------- one variant, in its process

def stock_trainer(precision: str, model_dir: Path, data_dir: Path, out: Path, steps: int, global_batch: int,
                  tuned: dict | None = None):
    """What a plain TRL script does: NF4 double-quant, LoRA r16/a32, paged 8-bit AdamW, batch 4, checkpointing.
    `tuned`: {"micro": micro-batch (capped at the global batch), "checkpointing": bool}, length-grouped batches."""
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from sumtune.modeling import upcast_trainable_params

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    if not torch.cuda.is_available():  # CPU smoke test: no mixed precision there
        precision, dtype = "fp32", torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template = Path("prompts/chat_template.jinja").read_text()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, quantization_config=quant,
                                                 device_map={"": 0} if torch.cuda.is_available() else None)
    micro = min(tuned["micro"], global_batch) if tuned else 4
    args = SFTConfig(str(out), per_device_train_batch_size=micro, gradient_accumulation_steps=global_batch // micro,
                     gradient_checkpointing=tuned["checkpointing"] if tuned else True, optim="paged_adamw_8bit",
                     train_sampling_strategy="group_by_length" if tuned else "random",
                     fp16=precision == "fp16",
                     bf16=precision == "bf16", max_length=1024, learning_rate=2e-4, lr_scheduler_type="cosine",
                     warmup_steps=0.03, max_steps=steps, logging_steps=1, report_to="none", save_strategy="no",
                     seed=42)
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=load_from_disk(str(data_dir))["train"].select_columns(["prompt", "completion"]),
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
                                                task_type="CAUSAL_LM"))
    if precision == "fp16":  # TRL casts QLoRA adapters to bf16, which fp16's grad scaler cannot unscale
        upcast_trainable_params(trainer.model)
    return trainer


def recipe_trainer(recipe: str, extra: list[str], model_dir: Path, data_dir: Path, out: Path, steps: int,
                   global_batch: int):
    import torch

    from sumtune.config import parse_args
    from sumtune.training import build_trainer

    if not torch.cuda.is_available():  # CPU smoke test: no mixed precision there
        extra = [*extra, "--bf16", "false", "--fp16", "false", "--dtype", "float32"]
    data_args, _, training_args, model_args = parse_args([
        "--config", recipe, *extra, "--model_name_or_path", str(model_dir), "--dataset_name", str(data_dir),
        "--output_dir", str(out), "--max_steps", str(steps), "--eval_strategy", "no", "--save_strategy", "no",
        "--report_to", "none", "--logging_steps", "1"])
    # Same examples per optimizer step in every variant, so losses after the same steps compare.
    training_args.gradient_accumulation_steps = max(1, global_batch // training_args.per_device_train_batch_size)
    if training_args.padding_free and not training_args.packing:
        # Rows are already fit to max_length by sumtune.data, and TRL refuses padding_free with max_length set (it
        # would not enforce it), so the bench passes max_length=None to SFTTrainer.
        training_args.max_length = None
    return build_trainer(data_args, training_args, model_args)


def apply_patches(trainer, patches: list[str]) -> None:
    """Bench-only changes to a built trainer: settings the library does not offer, measured against its own."""
    import torch

    if "no-cudnn-sdp" in patches:
        torch.backends.cuda.enable_cudnn_sdp(False)
        log("SDPA: cuDNN attention disabled (flash / memory-efficient kernels)")
    if "autocast-ln" in patches:  # undo layer_norm_in_input_dtype: the class's forward again
        undone = [m.__dict__.pop("forward") for m in trainer.model.modules()
                  if isinstance(m, torch.nn.LayerNorm) and "forward" in m.__dict__]
        log(f"LayerNorm back under autocast (fp32) in {len(undone)} modules")


def step_meter(trainer, device: str):
    """A callback that records, at the end of each optimizer step: the time, the tokens trained so far and the graphs
    torch.compile has built so far (a compile inside the timed steps is flagged). Returns it and its list of marks."""
    from torch._dynamo.utils import counters
    from transformers import TrainerCallback

    marks: list[tuple[float, int, int]] = []

    class Meter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            marks.append((time.perf_counter(), trainer._total_train_tokens, counters["stats"]["unique_graphs"]))

    return Meter(), marks


def step_profiler(step: int, path: str, device: str):
    """A callback that runs torch.profiler over optimizer step `step` and writes its table to `path`.
    gpu_busy_share = summed kernel time / wall time of the step: well below 1 means the GPU waits on the CPU
    (launches, Python)."""
    import torch
    from transformers import TrainerCallback

    class Profile(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if device == "cuda":
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                synchronize(device)
                self.prof = torch.profiler.profile(activities=activities)
                self.prof.start()
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step + 1 and hasattr(self, "prof"):
                synchronize(device)
                wall = time.perf_counter() - self.t0
                self.prof.stop()
                write_profile(self.prof.key_averages(), wall, path, device)

    return Profile()


def write_profile(events, wall: float, path: str, device: str) -> None:
    gpu = [e for e in events if e.device_type.name == "CUDA"]  # kernel rows; operator rows repeat them
    busy = sum(e.self_device_time_total for e in gpu) / 1e6
    Path(path).write_text(
        f"step wall {wall:.3f} s, summed kernel time {busy:.3f} s, gpu_busy_share {busy / wall:.2f}, "
        f"kernels {sum(e.count for e in gpu)}\n\n"
        + events.table(sort_by="self_cuda_time_total" if device == "cuda" else "self_cpu_time_total", row_limit=40,
                       max_name_column_width=70))
    log(f"profile written to {path}: gpu_busy_share {busy / wall:.2f}")


def run_variant(name: str, opts) -> dict:
    """Train one variant in this process; its figures (speed, memory, losses, resolved settings)."""
    import torch
    from transformers import set_seed

    spec = VARIANTS[name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and spec.get("cap"):
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(spec["cap"] * 2**30 / total)
    work = Path(opts.work)
    data_dir = work / DATA_DIRS[spec.get("data", "real")]
    steps = opts.steps + opts.warmup
    set_seed(42)
    out = work / "runs" / name
    if "stock" in spec:
        trainer = stock_trainer(spec["stock"], work / "phi-2-random", data_dir, out, steps, opts.global_batch,
                                spec.get("tuned"))
    else:
        trainer = recipe_trainer(spec["recipe"], [*spec.get("args", []), *shlex.split(opts.override or "")],
                                 work / "phi-2-random", data_dir, out, steps, opts.global_batch)
    apply_patches(trainer, spec.get("patch", []))
    meter, marks = step_meter(trainer, device)
    trainer.add_callback(meter)
    if opts.profile:
        trainer.add_callback(step_profiler(opts.warmup, opts.profile, device))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    if opts.save_adapter:
        trainer.save_model(opts.save_adapter)
    return {"process": trainer.accelerator.process_index, "processes": trainer.accelerator.num_processes,
            **speed_and_losses(trainer, marks, opts.warmup, device), "settings": resolved_settings(trainer)}


def speed_and_losses(trainer, marks: list[tuple[float, int, int]], warmup: int, device: str) -> dict:
    import torch
    from torch._dynamo.utils import counters

    (t0, n0, g0), (t1, n1, g1) = marks[warmup - 1], marks[-1]
    logs = [e for e in trainer.state.log_history if "loss" in e]
    return {
        "tokens_per_s": round((n1 - n0) / (t1 - t0), 1),
        "graphs_compiled_in_timed_steps": g1 - g0,
        "graph_breaks": sum(counters["graph_break"].values()),
        # a compile shows as an outlier
        "step_seconds": [round(b[0] - a[0], 3) for a, b in zip(marks, marks[1:], strict=False)],
        "peak_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if device == "cuda" else None,
        "loss": logs[-1]["loss"],
        "loss_mean": round(sum(e["loss"] for e in logs) / len(logs), 4),
        "grad_norm": logs[-1].get("grad_norm"),
        "losses": [e["loss"] for e in logs],
        "grad_norms": [e.get("grad_norm") for e in logs],
        "tokens": n1 - n0,
    }


def resolved_settings(trainer) -> dict:
    """The settings the variant trained with, as the trainer resolved them (recipe, overrides and bench changes)."""
    a = trainer.args
    return {"precision": "bf16" if a.bf16 else "fp16" if a.fp16 else "fp32",
            "per_device_train_batch_size": a.per_device_train_batch_size,
            "gradient_accumulation_steps": a.gradient_accumulation_steps,
            "gradient_checkpointing": a.gradient_checkpointing,
            "gradient_checkpointing_kwargs": a.gradient_checkpointing_kwargs,
            "checkpoint_every_n_layers": getattr(a, "checkpoint_every_n_layers", 1),
            "uncheckpointed_layers": getattr(a, "uncheckpointed_layers", 0),
            "compile_decoder_layers": getattr(a, "compile_decoder_layers", False),
            "causal_only_training_attention": getattr(a, "causal_only_training_attention", False),
            "lora_dropout": next(iter(trainer.model.peft_config.values())).lora_dropout
            if hasattr(trainer.model, "peft_config") else None,
            "padding_free": a.padding_free,
            "packing": a.packing, "train_sampling_strategy": a.train_sampling_strategy,
            "torch_compile": a.torch_compile,
            "attn_implementation": trainer.model.config._attn_implementation}


# ------------------------------------------------------------------------------------------------------ driver

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", default=".device_assets", help="folder with phi-2/ and xsum_test_sample_500.jsonl")
    parser.add_argument("--work", default="/tmp/sumtune-bench", help="scratch: model, data, runs")
    parser.add_argument("--variants", default="stock-fp16,stock-bf16,qlora,qlora-t4",
                        help=f"comma list, or 'all'; known: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--global_batch", type=int, default=16, help="examples per optimizer step in every variant")
    parser.add_argument("--results", default="bench/results/train_throughput.jsonl")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per variant")
    parser.add_argument("--tiny", action="store_true", help="2-layer stand-in model (CPU smoke test)")
    parser.add_argument("--gpus", type=int, default=2, help="processes for the variants that launch several")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the variant list this many times, round robin, and print each variant's median")
    parser.add_argument("--same_rows", action="store_true",
                        help="multi-GPU variants train --steps/--gpus and --warmup/--gpus steps, so they see the same "
                             "rows as the 1-GPU variants (both must divide by --gpus)")
    parser.add_argument("--child", help="run only this variant, in this process, on assets already built in --work")
    parser.add_argument("--save_adapter", help="with --child: save the trained adapter here")
    parser.add_argument("--override", help="with --child: extra recipe arguments ('--per_device_train_batch_size 4')")
    parser.add_argument("--profile", help="with --child: profile the first timed step, write the table to this file")
    opts = parser.parse_args()
    if opts.child:
        return opts
    opts.names = list(VARIANTS) if opts.variants == "all" else opts.variants.split(",")
    unknown = [n for n in opts.names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    if opts.same_rows and (opts.steps % opts.gpus or opts.warmup % opts.gpus):
        parser.error(f"--same_rows needs --steps and --warmup divisible by --gpus ({opts.gpus})")
    return opts


def child_command(name: str, opts, port: int) -> tuple[list[str], dict, int, int]:
    """The variant's own process (under accelerate when it launches several): argv, environment, steps, warm-up."""
    spec = VARIANTS[name]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    launch = [sys.executable]
    steps, warmup = opts.steps, opts.warmup
    if spec.get("launch"):  # one process per GPU under accelerate
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", spec["launch"],
                  "--num_processes", str(opts.gpus), "--main_process_port", str(port)]
        if opts.same_rows:
            steps, warmup = steps // opts.gpus, warmup // opts.gpus
    else:  # one process sees one GPU (Trainer would wrap several in DataParallel)
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    argv = [*launch, __file__, "--child", name, "--work", opts.work, "--steps", str(steps),
            "--warmup", str(warmup), "--global_batch", str(opts.global_batch)]
    return argv, env, steps, warmup


def run_child(argv: list[str], env: dict, timeout: int) -> tuple[dict | None, str | None, list[str]]:
    """Run one variant's process: its result (rank 0's, with every rank's peak), an error line, and its output."""
    # Own process group: on a timeout the launcher's workers go too (they would hold the GPUs for the next run)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return None, f"timeout after {timeout}s", (stdout + stderr).splitlines()
    lines = (stdout + stderr).strip().splitlines()
    results = [json.loads(x[7:]) for x in stdout.splitlines() if x.startswith("RESULT ")]
    # Several processes: rank 0's row (its token count is every rank's), with the largest peak of any GPU.
    result = next((r for r in results if r.get("process", 0) == 0), None)
    if result and len(results) > 1:
        result["peak_gib_per_gpu"] = [r["peak_gib"] for r in sorted(results, key=lambda r: r["process"])]
        result["peak_gib"] = max(result["peak_gib_per_gpu"], key=lambda g: g or 0)
        for key in ("graphs_compiled_in_timed_steps", "graph_breaks"):  # any rank's stall stalls them all
            result[key] = max(r.get(key, 0) for r in results)
    error = None if result else next((x for x in reversed(lines) if "Error" in x), lines[-1] if lines else "")
    return result, error, lines


def compare_with_stock(row: dict, refs: dict) -> None:
    """Speed against the reference variant and loss against the stock script at the same precision, both run earlier
    in this invocation (list the stock variants first)."""
    if row["reference"]:
        refs["reference"] = row
    precision = row["settings"]["precision"]
    if row["variant"].startswith("stock"):
        refs[precision] = row
    ref, same = refs.get("reference"), refs.get(precision)
    row["ratio_vs_reference"] = round(row["tokens_per_s"] / ref["tokens_per_s"], 2) if ref else None
    row["loss_rel_vs_stock"] = round(row["loss"] / same["loss"] - 1, 4) \
        if same and row["data"] == same["data"] else None


def print_table(rows: list[dict], context: dict) -> None:
    print(f"\n{context['device']}  {json.dumps(context['versions'])}  {context['date']}")
    # "x best stock": against the fastest stock TRL variant that ran in this invocation (the tuned baseline).
    stock = [r["tokens_per_s"] for r in rows if r["variant"].startswith("stock") and "tokens_per_s" in r]
    print(f"{'variant':32} {'tok/s':>8} {'x ref':>6} {'x best stock':>12} {'peak GiB':>9} {'loss':>8} {'vs stock':>9}")
    for r in rows:
        if "tokens_per_s" in r:
            rel = r["loss_rel_vs_stock"]
            print(f"{r['variant']:32} {r['tokens_per_s']:8.0f} {r['ratio_vs_reference'] or 0:6.2f} "
                  f"{r['tokens_per_s'] / max(stock) if stock else 0:12.2f} "
                  f"{r['peak_gib'] or 0:9.2f} {r['loss']:8.4f} {'' if rel is None else f'{rel:+.2%}':>9}"
                  + ("  COMPILED INSIDE THE TIMED STEPS" if r.get("graphs_compiled_in_timed_steps") else ""))
        else:
            print(f"{r['variant']:32} FAILED: {r['error'][:80]}")


def print_medians(rows: list[dict], names: list[str]) -> None:
    """Medians over the repeats, each against the first variant's median."""
    speeds = {n: sorted(r["tokens_per_s"] for r in rows if r["variant"] == n and "tokens_per_s" in r)
              for n in names}
    base = statistics.median(speeds[names[0]]) if speeds[names[0]] else None
    print(f"\n{'variant':32} {'runs':>4} {'median':>8} {'min':>8} {'max':>8} {'x ' + names[0]:>12}")
    for n, values in speeds.items():
        if values:
            median = statistics.median(values)
            print(f"{n:32} {len(values):4} {median:8.0f} {values[0]:8.0f} {values[-1]:8.0f} "
                  f"{median / base if base else 0:12.2f}")


def main() -> None:
    opts = parse_args()
    if opts.child:  # one variant in this process: print its result as the last line
        print("RESULT " + json.dumps(run_variant(opts.child, opts)), flush=True)
        return
    work = Path(opts.work)
    build_assets(Path(opts.assets), work, opts.tiny)
    context = run_context(PACKAGES)
    rows, refs = [], {}
    for repeat, name in ((k, n) for k in range(opts.repeats) for n in opts.names):
        log(f"{name} ..." + (f" (repeat {repeat + 1} of {opts.repeats})" if opts.repeats > 1 else ""))
        spec = VARIANTS[name]
        argv, env, steps, warmup = child_command(name, opts, 29600 + len(rows))
        start = time.time()
        result, error, lines = run_child(argv, env, opts.timeout)
        (work / "logs").mkdir(parents=True, exist_ok=True)
        (work / "logs" / f"{name}.log").write_text("\n".join(lines))
        row = {"variant": name, "reference": bool(spec.get("reference")), "device": context["device"],
               "versions": context["versions"], "date": context["date"],
               "recipe": spec.get("recipe"), "overrides": spec.get("args", []), "bench_patches": spec.get("patch", []),
               "launch": spec.get("launch"), "gpus": opts.gpus if spec.get("launch") else 1,
               "memory_cap_gib": spec.get("cap"), "data": spec.get("data", "real"), "steps": steps,
               "warmup_steps": warmup, "global_batch": opts.global_batch, "repeat": repeat,
               "wall_s": round(time.time() - start), "command": context["command"], **(result or {"error": error})}
        if result:
            compare_with_stock(row, refs)
        rows.append(row)
        append_rows(opts.results, [row])
        log(f"{name}: " + (f"{row['tokens_per_s']} tok/s, peak {row['peak_gib']} GiB, loss {row['loss']}"
                           if result else f"FAILED: {error}"))
    print_table(rows, context)
    if opts.repeats > 1:
        print_medians(rows, opts.names)


if __name__ == "__main__":
    main()
