"""Batched summary generation: rows sorted by prompt length, batched by a token budget, stop at EOS.

Sorting keeps padding small, and the token budget (rows x (longest prompt + new tokens), the KV cache's size) lets
short prompts travel in large batches while long ones stay within memory. Greedy decoding runs its own loop over a
KV cache allocated once per batch: `generate()`'s growing cache copies the whole cache at every step (2x slower on an
H200). Beam search and extra `generate()` options go through `generate()`. A CUDA graph of the decode step and
torch.compile were measured and did not pay: see bench/results/generate_throughput.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .prompts import render_prompt

logger = logging.getLogger(__name__)

# SDPA without cuDNN attention. With it (PyTorch 2.11, H200), the same bf16 generation run twice gave different greedy
# text on 38% of rows; without it 500 of 500 rows matched, at 76 instead of 83-89 summaries/s
# (bench/results/generate_throughput.md, 2026-11-27 18:05 UTC). Reproducible scores are the default.
REPRODUCIBLE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


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


class SlotCache:
    """Fixed-size KV cache written in place at `slots` (a device tensor the caller moves, so no step syncs the host).
    Attention reads the whole buffer; the caller's 4D mask hides unwritten slots.

    Duck-typed, not a `transformers.Cache`: the model only calls `update`, and the mask helpers then skip the
    per-layer bookkeeping whose attributes change between transformers versions."""

    def __init__(self, prefill, length: int):
        """Move a prefill's `DynamicCache` into buffers of `length` slots, one layer at a time (peak: the prompt's
        cache plus one layer's buffer)."""
        self.keys, self.values = [], []
        for layer in prefill.layers:
            for source, target in ((layer.keys, self.keys), (layer.values, self.values)):
                rows, heads, prompt_len, dim = source.shape
                buffer = source.new_zeros(rows, heads, length, dim)
                buffer[:, :, :prompt_len] = source
                target.append(buffer)
            layer.keys = layer.values = None
        self.slots = torch.zeros(1, dtype=torch.long, device=self.keys[0].device)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.keys[layer_idx].index_copy_(2, self.slots, key_states)
        self.values[layer_idx].index_copy_(2, self.slots, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions come from position_ids and the 4D mask, never from here


@torch.inference_mode()
def greedy_batch(model, input_ids, lengths, max_new_tokens: int, eos: int, pad: int,
                 min_new_tokens: int = 0) -> torch.Tensor:
    """Greedy continuation of a right-padded batch (`lengths`: real tokens per row): (rows, max_new_tokens) token
    ids, `pad` after each row's EOS.

    Same decisions as `generate(do_sample=False)` on each row alone: EOS is banned for the first `min_new_tokens`
    steps, and the loop ends when every row has emitted EOS.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: LoRA layers stay
    rows, prompt_len = input_ids.shape
    length = prompt_len + max_new_tokens
    device = input_ids.device
    # Prefill without a padding mask. With right padding every real token has only its own row's earlier real
    # tokens before it, so the causal mask alone is exact, positions are plain 0..n-1, and SDPA may run flash
    # attention (any padding mask forces its slower memory-efficient kernel). Pads compute values nothing reads:
    # their cache slots stay masked while decoding, and each row's first token comes from its last real position.
    prefill = causal_lm.model(input_ids=input_ids, use_cache=True)
    last = prefill.last_hidden_state[torch.arange(rows, device=device), lengths - 1]
    logits = causal_lm.lm_head(last).float()
    cache = SlotCache(prefill.past_key_values, length)
    del prefill
    # Cache slots each row may attend to: its real prompt tokens, then the new tokens at slots prompt_len, ...
    valid = torch.zeros(rows, length, dtype=torch.bool, device=device)
    valid[:, :prompt_len] = torch.arange(prompt_len, device=device) < lengths[:, None]

    out = torch.full((rows, max_new_tokens), pad, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    token = torch.zeros(rows, 1, dtype=torch.long, device=device)
    step = torch.zeros(1, dtype=torch.long, device=device)  # index of the token being chosen
    position = lengths[:, None].clone()  # a row's next position counts its real tokens only
    cache.slots = step + prompt_len - 1  # slot of the token fed in, one behind the one being chosen

    def choose(logits):
        logits[:, eos] = torch.where(step[0] < min_new_tokens, float("-inf"), logits[:, eos])
        chosen = torch.where(done, pad, logits.argmax(-1))
        out.index_copy_(1, step, chosen[:, None])
        done.logical_or_(chosen == eos)
        token.copy_(chosen[:, None])

    def decode():
        step.add_(1)
        cache.slots.add_(1)
        valid.index_fill_(1, cache.slots, True)
        hidden = causal_lm.model(input_ids=token, attention_mask=valid[:, None, None, :], position_ids=position,
                                 past_key_values=cache, use_cache=True).last_hidden_state
        position.add_(1)
        choose(causal_lm.lm_head(hidden[:, -1]).float())

    choose(logits)
    for _ in range(1, max_new_tokens):
        if bool(done.all()):
            break
        decode()
    return out


def encode_prompts(tokenizer, prompts: list[list[dict]]) -> list[list[int]]:
    """Token ids of each conversational prompt rendered with the chat template (generation prompt included)."""
    return tokenizer([render_prompt(tokenizer, p) for p in prompts], add_special_tokens=False)["input_ids"]


def plan_batches(lengths: list[int], max_new_tokens: int = 64, num_beams: int = 1, batch_size: int = 16,
                 max_batch_tokens: int | None = None) -> list[list[int]]:
    """The batches `iter_token_ids` generates, as lists of indices into `lengths` (prompt token counts)."""
    budget = None if max_batch_tokens is None else max_batch_tokens // num_beams  # each beam holds its own cache
    return list(token_budget_batches(lengths, max_new_tokens, batch_size, budget))


def batch_cost(lengths: list[int], batch: list[int], max_new_tokens: int) -> int:
    """Tokens a batch holds in its KV cache: rows x (longest prompt + new tokens); its work is about proportional."""
    return len(batch) * (max(lengths[i] for i in batch) + max_new_tokens)


@torch.inference_mode()
def iter_token_ids(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, num_beams: int = 1,
                   batch_size: int = 16, max_batch_tokens: int | None = None, min_new_tokens: int = 0,
                   batches: list[list[int]] | None = None, encoded: list[list[int]] | None = None,
                   cudnn_attention: bool = False, **generate_kwargs) -> Iterator[tuple[int, list[int]]]:
    """Yield (index into prompts, new token ids up to and excluding EOS) batch by batch, in generation order.

    `batches` (lists of indices into prompts) replaces the batching of `plan_batches`: data-parallel evaluation
    passes each process its share of the batches one process would make, so rows are generated in the same batches.
    `encoded`: the prompts' token ids when the caller already has them (`encode_prompts`).
    Greedy through `greedy_batch` unless num_beams > 1 or `generate_kwargs` are given (they go to `model.generate`,
    e.g. `cache_implementation="static"`). `cudnn_attention`: let SDPA use cuDNN (faster, not reproducible; see
    REPRODUCIBLE_ATTENTION). The switch is set only while a batch computes, never while the caller holds a row.
    """
    if encoded is None:
        encoded = encode_prompts(tokenizer, prompts)
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if batches is None:
        batches = plan_batches([len(ids) for ids in encoded], max_new_tokens, num_beams, batch_size, max_batch_tokens)
    for batch in batches:
        greedy = num_beams == 1 and not generate_kwargs
        # The own greedy loop prefills right-padded rows (see greedy_batch); generate() continues from the last
        # position, so it takes left padding (it derives position_ids from the attention mask).
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding_side="right" if greedy else "left",
                               return_tensors="pt").to(device)
        with contextlib.nullcontext() if cudnn_attention else sdpa_kernel(REPRODUCIBLE_ATTENTION):
            if greedy:
                new = greedy_batch(model, inputs["input_ids"], inputs["attention_mask"].sum(-1), max_new_tokens, eos,
                                   pad, min_new_tokens)
            else:
                new = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                     num_beams=num_beams, do_sample=False, eos_token_id=eos, pad_token_id=pad,
                                     **generate_kwargs)[:, inputs["input_ids"].shape[1]:]
        for i, ids in zip(batch, new.tolist(), strict=True):
            yield i, ids[:ids.index(eos)] if eos in ids else ids


def iter_summaries(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, num_beams: int = 1,
                   batch_size: int = 16, max_batch_tokens: int | None = None,
                   **kwargs) -> Iterator[tuple[int, str]]:
    """Yield (index into prompts, summary) batch by batch, in generation order. See `iter_token_ids`."""
    for i, ids in iter_token_ids(model, tokenizer, prompts, max_new_tokens, num_beams, batch_size, max_batch_tokens,
                                 **kwargs):
        yield i, tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_summaries(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, num_beams: int = 1,
                       batch_size: int = 16, max_batch_tokens: int | None = None, **kwargs) -> list[str]:
    """One summary per conversational prompt, in input order."""
    outputs: list[str] = [""] * len(prompts)
    for i, text in iter_summaries(model, tokenizer, prompts, max_new_tokens, num_beams, batch_size, max_batch_tokens,
                                  **kwargs):
        outputs[i] = text
    return outputs
