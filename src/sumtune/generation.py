"""Batched summary generation: left padding, rows sorted by prompt length, stop at EOS."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from .prompts import render_prompt

logger = logging.getLogger(__name__)


def length_sorted_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first, so an OOM shows up at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@torch.inference_mode()
def iter_summaries(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, num_beams: int = 1,
                   batch_size: int = 16) -> Iterator[tuple[int, str]]:
    """Yield (index into prompts, summary) batch by batch, in generation order. Greedy unless num_beams > 1."""
    if tokenizer.padding_side != "left":
        # Decoder-only models continue from the last position: right padding would put pads before the summary.
        tokenizer.padding_side = "left"
    texts = [render_prompt(tokenizer, prompt) for prompt in prompts]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    model.eval()
    device = next(model.parameters()).device
    for batch in length_sorted_batches([len(ids) for ids in encoded], batch_size):
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(device)
        generated = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = generated[:, inputs["input_ids"].shape[1]:]
        for i, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=False):
            yield i, text.strip()


def generate_summaries(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, num_beams: int = 1,
                       batch_size: int = 16) -> list[str]:
    """One summary per conversational prompt, in input order."""
    outputs: list[str] = [""] * len(prompts)
    for i, text in iter_summaries(model, tokenizer, prompts, max_new_tokens, num_beams, batch_size):
        outputs[i] = text
    return outputs
