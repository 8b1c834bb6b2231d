"""Summaries per second: stock `model.generate()` against sumtune.generation on a Phi-2-shaped random-weight model,
or on the model of `--model-config` (a folder with a config.json: random weights; with weights too: those).

Prompts are XSum articles rendered with the project's chat template and cut to fit `--max-length` tokens
(sumtune.data.fit_to_budget). Every variant, stock and project, is forced to exactly `--new-tokens` tokens
(min_new_tokens = max_new_tokens; random weights would never pick EOS anyway): the comparison is like for like.
match_rate = share of rows whose greedy token ids equal stock batch-1 `generate()` on the same rows and the same
model: the project variants run the model as evaluate.py loads it (fused tanh GELU, `sumtune.modeling.load_model`)
and are matched against stock batch 1 on that model; `*_stock_act` runs the project loop on the stock model.

    python bench/generate_throughput.py --assets .device_assets/phi-2 \
        --data .device_assets/xsum_test_sample_500.jsonl --output $OUT/generate_throughput.jsonl
    python bench/generate_throughput.py --model-config outputs/models/smollm2-135m --skip nf4 ...   # grouped k/v
    python bench/generate_throughput.py --assets ../shared/phi-2 --data ../shared/data/xsum_test_sample_500.jsonl \
        --tiny --rows 8 --batch1-rows 4 --output /tmp/g.jsonl [--model-config DIR]        # CPU smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

import torch
from common import append_rows, run_context, timed
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from sumtune import patches
from sumtune.data import fit_to_budget
from sumtune.generation import DECODE_ATTENTION, SlotCache, iter_token_ids, matmul_decode_supported
from sumtune.modeling import FUSED_ACTIVATIONS, load_tokenizer
from sumtune.prompts import read_text, render_prompt

TEST_ROWS = 11_334  # XSum test split
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "trl")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default=".device_assets/phi-2", help="Folder with Phi-2's config.json and tokenizer.")
    p.add_argument("--model-config",
                   help="Folder with another model's config.json (e.g. a grouped key/value Llama): random weights from "
                        "it, or its weights when the folder has safetensors; its tokenizer if it has one, else "
                        "--assets' (the vocabulary then grows to the tokenizer's when that is larger).")
    p.add_argument("--data", default=".device_assets/xsum_test_sample_500.jsonl")
    p.add_argument("--output", required=True, help="JSONL file: one object per variant is appended.")
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--tile", type=int, default=1,
                   help="Repeat the rows N times: the test set's 11,334 rows fill batches more densely than 500 "
                        "(as bench/eval_data_parallel.py --repeat does for evaluate.py).")
    p.add_argument("--batch1-rows", type=int, default=32, help="Rows for stock batch-1 (the match reference).")
    p.add_argument("--nf4-batch1-rows", type=int, default=16, help="Rows for stock batch-1 on NF4+LoRA; 0 skips.")
    p.add_argument("--new-tokens", type=int, default=26, help="XSum's mean summary length in Phi-2 tokens.")
    p.add_argument("--max-length", type=int, default=1024, help="Prompt + reference summary + EOS budget.")
    p.add_argument("--budgets", default="65536,131072", help="max_batch_tokens values for the project path.")
    p.add_argument("--batch-size", type=int, default=1024, help="Row cap per batch for the project path.")
    p.add_argument("--static", action="store_true", help="Also time generate() with a static KV cache (no compile).")
    p.add_argument("--compile-rows", type=int, default=0, help="Also time static cache + torch.compile on N rows.")
    p.add_argument("--skip", default="", help="Comma-separated variants to skip (stock_b1, stock_b64, nf4, ...).")
    p.add_argument("--fp32-match-rows", type=int, default=0,
                   help="Also compare greedy tokens in float32 on N rows: stock batch 1 vs the project path. "
                        "Separates an algorithmic difference (would persist) from bf16 rounding near-ties.")
    p.add_argument("--profile", help="Also profile the project path on --profile-rows rows; table to this file.")
    p.add_argument("--profile-rows", type=int, default=256,
                   help="The first N rows (dataset order: the sample's length mix); 0: all rows.")
    p.add_argument("--tie-gap", type=float, default=0.05,
                   help="A row that differs from the reference counts as a near-tie when, at its first differing "
                        "token, the reference's logit for this variant's token trails its top-1 by at most this much "
                        "(vLLM's tests accept a differing greedy token that is in the other's top list).")
    p.add_argument("--rerun", action="store_true",
                   help="Run the first budget's project variant twice: does the same run give the same tokens?")
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True) with CUBLAS_WORKSPACE_CONFIG=:4096:8.")
    p.add_argument("--no-cudnn-sdp", action="store_true",
                   help="Disable cuDNN attention in SDPA (PyTorch's flash / memory-efficient kernels instead).")
    p.add_argument("--cudnn-attention", action="store_true",
                   help="Project path: let SDPA use cuDNN attention (evaluate.py's --cudnn_attention; off by default "
                        "there and here: not reproducible between runs).")
    p.add_argument("--decode-attention", default="matmul", choices=DECODE_ATTENTION,
                   help="The project path's decoding attention (sumtune.generation.greedy_batch).")
    p.add_argument("--compare", default="eager,cat_rotary,sdpa",
                   help="Also time the last budget with these changes to the project path, alternated with the default "
                        "--repeats times: eager (no CUDA graph), cat_rotary (transformers' rotary embedding), sdpa "
                        "(SDPA decoding attention with a mask), copy_prefill (the prefill into a DynamicCache, then "
                        "copied into the decoding cache); '' for none.")
    p.add_argument("--repeats", type=int, default=2, help="Rounds of the --compare alternation.")
    p.add_argument("--eager", action="store_true", help="Project path without a CUDA graph of the decoding step.")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: shrink the model to 2 small layers.")
    args = p.parse_args()
    if unknown := set(filter(None, args.compare.split(","))) - set(COMPARE):
        p.error(f"--compare: unknown {sorted(unknown)}; known: {sorted(COMPARE)}")
    return args


def build_prompts(args, tokenizer) -> list[list[dict]]:
    instruction = read_text("prompts/instruction.txt", "Instruction file")
    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    fitted = [fit_to_budget(tokenizer, instruction, r["document"], r["summary"], args.max_length) for r in rows]
    prompts = [f["prompt"] for f in fitted if f is not None][: args.rows]
    return prompts * args.tile  # copies after the originals: stock batch-1 rows (the first ones) stay distinct


def model_folder(args) -> Path:
    return Path(args.model_config or args.assets)


def has_weights(args) -> bool:
    """A --model-config folder with safetensors is loaded with its weights (except --tiny, which shrinks it)."""
    return args.model_config is not None and not args.tiny and any(model_folder(args).glob("*.safetensors"))


def tokenizer_folder(args) -> str:
    folder = model_folder(args)
    return str(folder if any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
               else args.assets)


def build_config(args, vocab_size: int):
    config = AutoConfig.from_pretrained(model_folder(args))
    if not has_weights(args) and config.vocab_size < vocab_size:  # token ids past the embedding would fail
        config.vocab_size = vocab_size
    if args.tiny:
        grouped = config.num_key_value_heads < config.num_attention_heads
        config.update(dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2 if grouped else 4))
        if getattr(config, "head_dim", None) is not None:
            config.head_dim = 16
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = config.layer_types[:2]
    return config


def build_model(args, device: str, dtype: torch.dtype | None = None, fused_act: bool = False):
    """Random weights (seed 0), or the --model-config folder's. `fused_act`: the activation
    `sumtune.modeling.load_model` gives the model that evaluate.py runs (the same weights; stock scripts keep
    Phi-2's Python-op gelu_new)."""
    config = build_config(args, args.vocab_size)
    if fused_act and getattr(config, "hidden_act", None) in FUSED_ACTIVATIONS and patches.enabled("fused_gelu"):
        config.hidden_act = FUSED_ACTIVATIONS[config.hidden_act]
    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    if has_weights(args):
        return AutoModelForCausalLM.from_pretrained(model_folder(args), config=config, dtype=dtype,
                                                    attn_implementation="sdpa", device_map={"": device}).eval()
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU, not on the host's CPU (the slow part of a model build)
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype).eval()


def describe_model(args, model) -> str:
    config = model.config
    if args.model_config is None:
        shape = "Phi-2 config"
    else:
        shape = (f"{args.model_config}: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
                 f"{config.num_attention_heads} heads / {config.num_key_value_heads} key/value heads, vocab "
                 f"{config.vocab_size}")
    weights = "its weights" if has_weights(args) else "random weights"
    return f"{type(model).__name__}, {shape}, {weights}" + (" (tiny)" if args.tiny else "")


def build_nf4_lora(model, device: str, folder: Path):
    """The same random weights in NF4 (double quant, bf16 compute) under a random, non-zero LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig

    model.save_pretrained(folder)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    base = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=torch.bfloat16,
                                                attn_implementation="sdpa", device_map={"": device})
    phi = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]  # Phi-2's linear layers, as the recipes name them
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=phi if base.config.model_type == "phi" else "all-linear",
                      init_lora_weights=False, task_type="CAUSAL_LM")
    torch.manual_seed(1)
    model = get_peft_model(base, lora).eval()
    if device == "cpu":  # smoke test: keep the 4-bit layout a GPU has (bitsandbytes would repack it for its CPU
        from sumtune.modeling import keep_4bit_weights_trainable_on_cpu  # kernel, and dequantize() reads that wrongly)

        keep_4bit_weights_trainable_on_cpu(model)
    return model


@torch.inference_mode()
def stock_generate(model, tokenizer, prompts, batch_size: int, new_tokens: int,
                   margins: dict | None = None) -> dict[int, list[int]]:
    """What a user writes without the project: left-padded batches in dataset order. `margins`: filled with each
    row's 8 best tokens and their logits at every step (from generate's raw logits)."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    out = {}
    for start in range(0, len(prompts), batch_size):
        texts = [render_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        inputs = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(device)
        # The tokenizer's EOS, as the project path bans it (a model's generation config may name others)
        generated = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                   return_dict_in_generate=True,
                                   output_logits=margins is not None)
        for offset, ids in enumerate(generated.sequences[:, inputs["input_ids"].shape[1]:].tolist()):
            out[start + offset] = ids
        if margins is not None:
            top = torch.stack(generated.logits, dim=1).float().topk(8, dim=-1)  # (rows, steps, 8)
            for offset in range(top.values.shape[0]):
                margins[start + offset] = [dict(zip(ids, values, strict=True)) for ids, values in
                                           zip(top.indices[offset].tolist(), top.values[offset].tolist(), strict=True)]
    return out


class _CopyAfterPrefill(DynamicCache):
    """The baseline of the `copy_prefill` comparison: a DynamicCache's own update (its concatenation to an empty
    tensor), then a copy into the SlotCache's buffers, the GPU work of a prefill into a plain DynamicCache."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        self.target.write_prefill(keys, values, layer_idx)
        return keys, values


@contextlib.contextmanager
def copy_prefill():
    """Bench-only: greedy_batch's prefill through _CopyAfterPrefill (the `copy_prefill` comparison)."""
    original = SlotCache.prefill_cache
    SlotCache.prefill_cache = lambda self: _CopyAfterPrefill(self)
    try:
        yield
    finally:
        SlotCache.prefill_cache = original


def match_stats(outputs: dict[int, list[int]], reference: dict[int, list[int]], top: dict[int, list[dict]],
                new_tokens: int, tie_gap: float) -> dict:
    """How a variant's greedy tokens compare with a reference run's on the rows both have: the share of equal rows,
    how many leading tokens differing rows still share (a late near-tie flip, not an offset bug), and, where the
    reference's top logits were kept (`top`), whether each first difference was a near-tie of the reference."""
    rows = [i for i in reference if i in outputs]
    matched = [outputs[i] == reference[i] for i in rows]
    prefix = [next((k for k, (x, y) in enumerate(zip(outputs[i], reference[i], strict=False)) if x != y),
                   len(outputs[i])) for i in rows]
    stats = {"match_rate": round(sum(matched) / len(matched), 4) if matched else None, "match_rows": len(matched),
             "mean_matching_prefix": round(sum(prefix) / len(prefix), 2) if prefix else None}
    if not (top and matched):
        return stats
    # At the first differing token: how far did the reference's logit for this variant's token trail its top-1?
    # (None: not among the reference's 8 best.)
    diverged = [(i, k) for i, k in zip(rows, prefix, strict=True) if k < new_tokens and i in top]
    trails = [None if outputs[i][k] not in top[i][k] else round(max(top[i][k].values()) - top[i][k][outputs[i][k]], 4)
              for i, k in diverged]
    leads = sorted(sorted(step.values())[-1] - sorted(step.values())[-2] for i in top for step in top[i])
    near_tie = sum(t is not None and t <= tie_gap for t in trails)
    return stats | {"match_or_near_tie_rate": round((sum(matched) + near_tie) / len(matched), 4), "tie_gap": tie_gap,
                    "first_difference_trails": trails, "reference_lead_median": round(leads[len(leads) // 2], 4),
                    "reference_steps_led_by_at_most_tie_gap": round(sum(g <= tie_gap for g in leads) / len(leads), 4)}


class Bench:
    """One invocation: the prompts, the runs that later variants are matched against, and the rows it writes."""

    LOOP = "own greedy loop, KV cache preallocated per batch"

    def __init__(self, args, device: str, tokenizer, prompts: list, prompt_tokens: list[int], common: dict):
        self.args, self.device, self.tokenizer, self.prompts = args, device, tokenizer, prompts
        self.prompt_tokens, self.common = prompt_tokens, common
        self.reference: dict[str, dict[int, list[int]]] = {}
        self.margins: dict[str, dict[int, list[dict[int, float]]]] = {}  # per reference and row: top 8 {token: logit}
        self.settings = {"decode_attention": args.decode_attention, "cuda_graph": not args.eager, "fuse_rotary": True}
        self.budgets = [int(b) for b in args.budgets.split(",") if b]

    def batching(self, budget) -> str:
        return f"sorted, max_batch_tokens={budget}, batch_size<={self.args.batch_size}"

    def project(self, model, budget, rows=None, batch_size=None, **kwargs) -> dict[int, list[int]]:
        """sumtune.generation's path, forced to --new-tokens tokens a row."""
        args = self.args
        kwargs = {"decode_attention": args.decode_attention, "cuda_graph": not args.eager} | kwargs
        return dict(iter_token_ids(model, self.tokenizer, self.prompts if rows is None else rows,
                                   max_new_tokens=args.new_tokens, batch_size=batch_size or args.batch_size,
                                   max_batch_tokens=budget, min_new_tokens=args.new_tokens,
                                   cudnn_attention=args.cudnn_attention, **kwargs))

    def stock(self, model, rows: list, batch_size: int, keep_as: str | None = None,
              new_tokens: int | None = None) -> dict[int, list[int]]:
        """Stock generate(); `keep_as`: keep its tokens and top logits as a reference of that name."""
        margins = self.margins.setdefault(keep_as, {}) if keep_as else None
        out = stock_generate(model, self.tokenizer, rows, batch_size, new_tokens or self.args.new_tokens, margins)
        if keep_as:
            self.reference[keep_as] = out
        return out

    def time(self, fn):
        return timed(self.device, fn)

    def record(self, variant: str, stock: bool, outputs: dict[int, list[int]], seconds: float, memory: dict,
               ref: str, **extra) -> None:
        rows = len(outputs)
        assert sorted(outputs) == list(range(rows)), "every row exactly once"
        assert all(len(ids) == self.args.new_tokens for ids in outputs.values())
        stats = match_stats(outputs, self.reference.get(ref, {}), self.margins.get(ref, {}), self.args.new_tokens,
                            self.args.tie_gap)
        entry = {"variant": variant, "stock": stock, **self.common, "rows": rows, "seconds": round(seconds, 2),
                 "summaries_per_s": round(rows / seconds, 2),
                 "projected_min_11334": round(TEST_ROWS / (rows / seconds) / 60, 2),
                 "match_rate": stats.pop("match_rate"), "match_rows": stats.pop("match_rows"),
                 "match_reference": ref, **stats, **memory, **extra}
        append_rows(self.args.output, [entry])
        print(f"{variant:<34} {entry['summaries_per_s']:>8.2f}/s {entry['projected_min_11334']:>8.1f} min "
              f"match={entry['match_rate']} ({entry['match_rows']}) "
              f"near-tie-or-match={stats.get('match_or_near_tie_rate')} peak={memory.get('peak_gib')} GiB", flush=True)


def run_stock_model(bench: Bench, model, skip: set[str]) -> None:
    """Stock generate() at batch 1 (the first match reference) and 64, and the project loop, on the stock model."""
    args, prompts = bench.args, bench.prompts
    bench.stock(model, prompts[:4], 4, new_tokens=2)  # warm-up: kernels, cuBLAS handles
    if "stock_b1" not in skip:
        out, s, mem = bench.time(lambda: bench.stock(model, prompts[: args.batch1_rows], 1, keep_as="bf16_b1"))
        bench.record("stock_bf16_b1", True, out, s, mem, "bf16_b1", decode="generate()",
                     batching="batch 1, dataset order")
    if "stock_b64" not in skip:
        out, s, mem = bench.time(lambda: bench.stock(model, prompts, 64))
        bench.record("stock_bf16_b64", True, out, s, mem, "bf16_b1", decode="generate()",
                     batching="batch 64, dataset order, left-padded")
    if bench.budgets and "project_stock_act" not in skip:
        # The project loop on the stock model (Python-op gelu_new): the loop's share of the gain, apart from the
        # fused activation that evaluate.py's model loading adds.
        budget = bench.budgets[0]
        out, s, mem = bench.time(lambda: bench.project(model, budget))
        bench.record(f"project_bf16_tokens{budget}_stock_act", False, out, s, mem, "bf16_b1", decode=bench.LOOP,
                     batching=f"sorted, max_batch_tokens={budget}", activation="gelu_new (stock)")


def run_project(bench: Bench, model, skip: set[str]) -> str:
    """The model as evaluate.py loads it: stock batch 1 on it (the match reference), then the project path at each
    budget. Returns the reference's name."""
    args, activation = bench.args, model.config.hidden_act
    ref = "bf16_b1"
    if "stock_b1" not in skip:
        ref = "bf16_b1_fused_act"
        out, s, mem = bench.time(lambda: bench.stock(model, bench.prompts[: args.batch1_rows], 1, keep_as=ref))
        bench.record("stock_bf16_b1_fused_act", True, out, s, mem, ref, decode="generate()",
                     batching="batch 1, dataset order", activation=activation)
    if bench.budgets:  # warm-up of the project path (kernels, cuBLAS heuristics, graph capture), untimed
        bench.project(model, bench.budgets[0], bench.prompts[:64])
    if "sorted_b64" not in skip:
        out, s, mem = bench.time(lambda: bench.project(model, None, batch_size=64))
        bench.record("project_bf16_sorted_b64", False, out, s, mem, ref, decode=bench.LOOP,
                     batching="batch 64, sorted by length", activation=activation)
    for budget in bench.budgets:
        out, s, mem = bench.time(lambda b=budget: bench.project(model, b))
        bench.record(f"project_bf16_tokens{budget}", False, out, s, mem, ref, decode=bench.LOOP,
                     batching=bench.batching(budget), activation=activation, deterministic=args.deterministic,
                     **bench.settings)
        bench.reference[f"project_{budget}"] = out
    return ref


COMPARE = {"eager": {"cuda_graph": False}, "cat_rotary": {"fuse_rotary": False}, "copy_prefill": {},
           **{k: {"decode_attention": k} for k in DECODE_ATTENTION}}


def run_comparisons(bench: Bench, model, ref: str, compare: list[str]) -> None:
    """The default path alternated with each change, --repeats rounds, same rows and the last budget (sdpa: SDPA and
    a padding mask instead of the two batched matrix products; eager: no CUDA graph)."""
    if not (compare and bench.budgets):
        return
    budget = bench.budgets[-1]
    for repeat in range(bench.args.repeats):
        for change in ["default", *compare]:
            kwargs = COMPARE.get(change, {})
            with copy_prefill() if change == "copy_prefill" else contextlib.nullcontext():
                out, s, mem = bench.time(lambda kwargs=kwargs: bench.project(model, budget, **kwargs))
            same = sum(out[i] == bench.reference[f"project_{budget}"][i] for i in out) / len(out)
            bench.record(f"project_bf16_tokens{budget}_{change}_round{repeat + 1}", False, out, s, mem, ref,
                         decode=bench.LOOP, batching=bench.batching(budget), activation=model.config.hidden_act,
                         **{**bench.settings, **kwargs}, same_tokens_as_default=round(same, 4))


def run_rerun(bench: Bench, model) -> None:
    """The first budget again in the same process: does the same run give the same tokens?"""
    budget = bench.budgets[0]
    out, s, mem = bench.time(lambda: bench.project(model, budget))
    bench.record(f"project_bf16_tokens{budget}_rerun", False, out, s, mem, f"project_{budget}", decode=bench.LOOP,
                 batching="the same as the first run", activation=model.config.hidden_act,
                 deterministic=bench.args.deterministic, **bench.settings)


def write_profile(bench: Bench, model) -> None:
    """Where the time goes (prefill vs decoding kernels, attention, copies): one pass over the first rows."""
    subset = bench.prompts[: bench.args.profile_rows or None]
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        _, s, _ = bench.time(lambda: bench.project(model, bench.budgets[0], subset))
    table = prof.key_averages().table(sort_by="self_cuda_time_total" if bench.device == "cuda"
                                      else "self_cpu_time_total", row_limit=30, max_name_column_width=70)
    Path(bench.args.profile).write_text(f"the first {len(subset)} rows, max_batch_tokens={bench.budgets[0]}, "
                                        f"{s:.2f} s wall (under the profiler), {bench.settings}\n\n" + table)


def run_generate_variants(bench: Bench, model, ref: str) -> None:
    """generate() on the project's batches: a static KV cache (--static), and torch.compile on one batch of
    median-length rows, run twice: the first call compiles, the second shows the steady state (--compile-rows)."""
    args, budget = bench.args, bench.budgets[0] if bench.budgets else None
    if args.static:
        out, s, mem = bench.time(lambda: bench.project(model, budget, cache_implementation="static",
                                                       disable_compile=True))
        bench.record(f"project_bf16_tokens{budget}_generate_static", False, out, s, mem, ref,
                     decode="generate(cache_implementation='static', disable_compile=True)",
                     batching=f"sorted, max_batch_tokens={budget}")
    if args.compile_rows:
        order = sorted(range(len(bench.prompts)), key=lambda i: bench.prompt_tokens[i])
        subset = [bench.prompts[i] for i in order[len(order) // 2:][: args.compile_rows]]
        n = len(subset)
        for label, kwargs in (("dynamic", {}), ("static_compile_first", {"cache_implementation": "static"}),
                              ("static_compile_second", {"cache_implementation": "static"})):
            out, s, mem = bench.time(lambda kw=kwargs: bench.project(model, None, subset, n, **kw))
            bench.record(f"project_bf16_{n}rows_{label}", False, out, s, mem, "none",
                         decode="generate()" + (", static cache, auto torch.compile" if kwargs else ", dynamic cache"),
                         batching=f"one batch of {n} median-length rows")


def run_fp32(bench: Bench) -> None:
    """The same weights in float32 (no TF32): stock batch 1 and 64, and the project path, on the same rows. Separates
    an algorithmic difference (would persist) from bf16 rounding near-ties."""
    torch.backends.cuda.matmul.allow_tf32 = False
    model = build_model(bench.args, bench.device, torch.float32)
    rows, budget = bench.prompts[: bench.args.fp32_match_rows], bench.budgets[0]
    out, s, mem = bench.time(lambda: bench.stock(model, rows, 1, keep_as="fp32_b1"))
    bench.record("stock_fp32_b1", True, out, s, mem, "fp32_b1", decode="generate()", batching="batch 1, dataset order")
    out, s, mem = bench.time(lambda: bench.stock(model, rows, 64))
    bench.record("stock_fp32_b64", True, out, s, mem, "fp32_b1", decode="generate()",
                 batching="batch 64, dataset order, left-padded")
    out, s, mem = bench.time(lambda: bench.project(model, budget, rows))
    bench.record(f"project_fp32_tokens{budget}", False, out, s, mem, "fp32_b1", decode=bench.LOOP,
                 batching=bench.batching(budget))


def run_nf4(bench: Bench, skip: set[str]) -> None:
    """The adapter on the NF4 base, as evaluate.py runs it: on the 4-bit layers, with the base dequantized once
    (--dequantize_4bit_base true), and with the adapter merged into it in memory (--merge_adapter true)."""
    import tempfile

    from sumtune.modeling import dequantize_4bit_linears, merge_adapter_weights

    args = bench.args
    model = build_model(args, bench.device, fused_act=True)  # as evaluate.py loads it
    with tempfile.TemporaryDirectory() as folder:
        model = build_nf4_lora(model, bench.device, Path(folder))
    model.eval()
    bench.stock(model, bench.prompts[:4], 4, new_tokens=2)
    if args.nf4_batch1_rows:
        out, s, mem = bench.time(lambda: bench.stock(model, bench.prompts[: args.nf4_batch1_rows], 1,
                                                     keep_as="nf4_b1"))
        bench.record("stock_nf4_lora_b1", True, out, s, mem, "nf4_b1", decode="generate()",
                     batching="batch 1, dataset order")
    budget = bench.budgets[-1]
    out, s, mem = bench.time(lambda: bench.project(model, budget))
    bench.record(f"project_nf4_lora_tokens{budget}", False, out, s, mem, "nf4_b1", decode=bench.LOOP,
                 batching=bench.batching(budget), **bench.settings)
    if "nf4_dequantized" in skip:
        return
    dequantize_4bit_linears(model)
    for budget in bench.budgets:
        out, s, mem = bench.time(lambda budget=budget: bench.project(model, budget))
        bench.record(f"project_nf4_lora_dequantized_tokens{budget}", False, out, s, mem, "nf4_b1", decode=bench.LOOP,
                     batching=bench.batching(budget), **bench.settings)
    if "nf4_merged" not in skip:
        model = merge_adapter_weights(model)
        budget = bench.budgets[0]
        out, s, mem = bench.time(lambda: bench.project(model, budget))
        bench.record(f"project_nf4_lora_dequantized_merged_tokens{budget}", False, out, s, mem, "nf4_b1",
                     decode=bench.LOOP, batching=bench.batching(budget), **bench.settings)


def setup(args):
    """Global switches, the tokenizer, the prompts, the stock model, and the fields every row of this invocation
    carries. Returns the Bench and the model."""
    if args.no_cudnn_sdp:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if args.deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(tokenizer_folder(args), "prompts/chat_template.jinja", padding_side="left")
    args.vocab_size = len(tokenizer)
    prompts = build_prompts(args, tokenizer)
    prompt_tokens = [len(tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"])
                     for p in prompts]
    model = build_model(args, device)
    context = run_context(PACKAGES)
    context["versions"]["cuda"] = torch.version.cuda
    common = {
        "device": context["device"], "gpus": 1, "date": context["date"], "versions": context["versions"],
        "model": describe_model(args, model), "tokenizer": tokenizer_folder(args),
        "matmul_decode": matmul_decode_supported(model),
        "attn_implementation": model.config._attn_implementation, "new_tokens": args.new_tokens,
        "forced_length": "min_new_tokens = max_new_tokens (random weights never emit EOS; real ones may not either)",
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "prompt_tokens_max": max(prompt_tokens), "tile": args.tile, "command": context["command"],
        "cudnn_sdp": torch.backends.cuda.cudnn_sdp_enabled(),  # the global switch (stock variants run with it)
        "project_cudnn_attention": args.cudnn_attention and torch.backends.cuda.cudnn_sdp_enabled(),
    }
    return Bench(args, device, tokenizer, prompts, prompt_tokens, common), model


def main():
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    bench, model = setup(args)
    print(json.dumps(bench.common, indent=1), flush=True)
    run_stock_model(bench, model, skip)
    del model
    model = build_model(args, bench.device, fused_act=True)  # what evaluate.py loads
    ref = run_project(bench, model, skip)
    run_comparisons(bench, model, ref, [c for c in args.compare.split(",") if c])
    if args.rerun and bench.budgets:
        run_rerun(bench, model)
    if args.profile:
        write_profile(bench, model)
    run_generate_variants(bench, model, ref)
    del model
    if args.fp32_match_rows:
        run_fp32(bench)
    if "nf4" not in skip:
        run_nf4(bench, skip)


if __name__ == "__main__":
    main()
