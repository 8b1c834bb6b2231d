"""One decoding step's attention over a padded KV cache, alone: sumtune's two batched matrix products
(`sumtune.generation.decode_attention_forward`) against PyTorch's FlexAttention, whose decoding kernel splits each
row's slots across programs (flash-decoding) and which masks by a function of the row's position, so no hand-written
kernel is needed. Shapes are one decoding step of a generation batch: rows x heads x slots x head dim, with each
row's position a few slots before the end, as in a length-sorted batch. Reports microseconds per call, the
bandwidth of reading the keys and values once, and the largest difference from a float64 reference.

    python bench/decode_attention.py --output $OUT/decode_attention.jsonl          # CUDA
    python bench/decode_attention.py --device cpu --shapes 2x4x2x40x16 --iters 1   # CPU smoke test (eager flex)
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import append_rows, run_context, synchronize
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from sumtune.generation import decode_attention_forward

# rows x query heads x key/value heads x slots x head dim: Phi-2 at 65,536- and 131,072-token batches of
# XSum-length prompts, and SmolLM2-135M (grouped key/value heads) at 131,072.
SHAPES = "117x32x32x560x80,234x32x32x560x80,234x9x3x560x64"


def flex_decode(flex, query, key, value, position, block: int = 128):
    """FlexAttention over the cache: row r sees slots 0..position[r]. Every block up to the cache's end is listed
    as partial (the mask is applied inside it), so one BlockMask serves every step while positions advance."""
    rows, _, slots, _ = key.shape
    blocks = -(-slots // block)
    kv_num_blocks = torch.full((rows, 1, 1), blocks, dtype=torch.int32, device=key.device)
    kv_indices = torch.arange(blocks, dtype=torch.int32, device=key.device).expand(rows, 1, 1, blocks).contiguous()

    def visible(b, h, q_idx, kv_idx):
        return kv_idx <= position[b]

    mask = BlockMask.from_kv_blocks(kv_num_blocks, kv_indices, BLOCK_SIZE=block, mask_mod=visible,
                                    seq_lengths=(1, slots))
    return flex(query, key, value, block_mask=mask, enable_gqa=key.shape[1] != query.shape[1])


def time_us(fn, iters: int, device: torch.device) -> float:
    """Microseconds per call, after one untimed call."""
    fn()
    synchronize(device.type)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device.type)
    return (time.perf_counter() - start) / iters * 1e6


def measure(shape: str, device: torch.device, flex, generator: torch.Generator, iters: int) -> list[dict]:
    rows, heads, kv_heads, slots, dim = map(int, shape.split("x"))
    query = torch.randn(rows, heads, 1, dim, generator=generator).to(device, torch.bfloat16)
    key = torch.randn(rows, kv_heads, slots, dim, generator=generator).to(device, torch.bfloat16)
    value = torch.randn(rows, kv_heads, slots, dim, generator=generator).to(device, torch.bfloat16)
    position = (slots - 1 - torch.randint(0, 30, (rows,), generator=generator)).to(device)
    scaling = dim**-0.5
    groups = heads // kv_heads
    hidden = torch.arange(slots, device=device) > position[:, None]
    scores = (query.double() @ key.double().repeat_interleave(groups, 1).transpose(-1, -2)) * scaling
    scores = scores.masked_fill(hidden[:, None, None, :], float("-inf"))
    reference = (scores.softmax(-1) @ value.double().repeat_interleave(groups, 1)).transpose(1, 2)
    kernels = {
        "matmul": lambda: decode_attention_forward(None, query, key, value, None, scaling=scaling,
                                                   decode_position=position)[0],
        "flex": lambda: flex_decode(flex, query, key, value, position).transpose(1, 2),
    }
    kv_bytes = 2 * key.numel() * key.element_size()
    results = []
    for name, fn in kernels.items():
        start = time.perf_counter()
        out = fn()
        first_call_s = time.perf_counter() - start
        error = (out.double() - reference).abs().max().item()
        us = time_us(fn, iters, device)
        results.append({"shape": shape, "kernel": name, "us_per_call": round(us, 1),
                        "kv_read_tb_per_s": round(kv_bytes / us / 1e6, 2), "max_abs_error_vs_fp64": error,
                        "first_call_s": round(first_call_s, 2)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=SHAPES, help="comma list of rows x heads x kv heads x slots x dim")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--output", help="append one JSON row per shape and kernel")
    opts = parser.parse_args()
    device = torch.device(opts.device)
    # Compiled on CUDA (its fused decoding kernel); eager on the CPU, where the smoke test checks the code path only
    flex = torch.compile(flex_attention, dynamic=False) if device.type == "cuda" else flex_attention
    env = run_context(("torch",))
    rows_out = []
    generator = torch.Generator(device="cpu").manual_seed(0)
    for shape in opts.shapes.split(","):
        for row in measure(shape, device, flex, generator, opts.iters):
            row |= env
            print(json.dumps(row), flush=True)
            rows_out.append(row)
    if opts.output:
        append_rows(opts.output, rows_out)


if __name__ == "__main__":
    main()
