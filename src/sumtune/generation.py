"""Batched summary generation: rows sorted by prompt length, batched by a token budget, left-padded, stop at EOS.

Sorting keeps padding small, and the token budget (rows x (longest prompt + new tokens), the KV cache's size) lets
short prompts travel in large batches while long ones stay within memory. Measured in bench/results/.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from .prompts import render_prompt

logger = logging.getLogger(__name__)


def token_budget_batches(lengths: list[int], max_new_tokens: int, batch_size: int,
                         max_batch_tokens: int | None = None) -> Iterator[list[int]]:
    """Indices sorted longest first (an OOM shows up at once), each batch at most `batch_size` rows and, when
    `max_batch_tokens` is set, at most that many tokens counted as rows x (its longest prompt + `max_new_tokens`).
    Every index lands in exactly one batch; a row over the budget on its own gets a batch of one."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    start = 0
    while start < len(order):
        rows = batch_size
        if max_batch_tokens is not None:
            rows = min(rows, max(1, max_batch_tokens // (lengths[order[start]] + max_new_tokens)))
        yield order[start:start + rows]
        start += rows


@torch.inference_mode()
def iter_token_ids(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, num_beams: int = 1,
                   batch_size: int = 16, max_batch_tokens: int | None = None,
                   **generate_kwargs) -> Iterator[tuple[int, list[int]]]:
    """Yield (index into prompts, new token ids up to and excluding EOS) batch by batch, in generation order.

    Greedy unless num_beams > 1. `generate_kwargs` go to `model.generate` (e.g. `cache_implementation="static"`).
    """
    if tokenizer.padding_side != "left":
        # Decoder-only models continue from the last position: right padding would put pads before the summary.
        tokenizer.padding_side = "left"
    encoded = tokenizer([render_prompt(tokenizer, p) for p in prompts], add_special_tokens=False)["input_ids"]
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    budget = None if max_batch_tokens is None else max_batch_tokens // num_beams  # each beam holds its own cache
    for batch in token_budget_batches([len(ids) for ids in encoded], max_new_tokens, batch_size, budget):
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(device)
        # generate() derives position_ids from the attention mask, so left padding does not shift positions, and
        # it stops a batch once every row has emitted EOS (finished rows are filled with pad).
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                   eos_token_id=eos, pad_token_id=pad, **generate_kwargs)
        for i, ids in zip(batch, generated[:, inputs["input_ids"].shape[1]:].tolist(), strict=True):
            yield i, ids[:ids.index(eos)] if eos in ids else ids


def iter_summaries(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, num_beams: int = 1,
                   batch_size: int = 16, max_batch_tokens: int | None = None,
                   **generate_kwargs) -> Iterator[tuple[int, str]]:
    """Yield (index into prompts, summary) batch by batch, in generation order. See `iter_token_ids`."""
    for i, ids in iter_token_ids(model, tokenizer, prompts, max_new_tokens, num_beams, batch_size, max_batch_tokens,
                                 **generate_kwargs):
        yield i, tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_summaries(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, num_beams: int = 1,
                       batch_size: int = 16, max_batch_tokens: int | None = None, **generate_kwargs) -> list[str]:
    """One summary per conversational prompt, in input order."""
    outputs: list[str] = [""] * len(prompts)
    for i, text in iter_summaries(model, tokenizer, prompts, max_new_tokens, num_beams, batch_size, max_batch_tokens,
                                  **generate_kwargs):
        outputs[i] = text
    return outputs
