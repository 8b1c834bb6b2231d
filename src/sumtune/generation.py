"""Batched summary generation: rows sorted by prompt length, batched by a token budget, stop at EOS.

Sorting keeps padding small, and the token budget (rows x (longest prompt + new tokens), the KV cache's size) lets
short prompts travel in large batches while long ones stay within memory. Greedy decoding runs its own loop over a
KV cache allocated once per batch: `generate()`'s growing cache copies the whole cache at every step (2x slower on an
H200); each decoding step is replayed as a CUDA graph, its attention two batched matrix products over the cache, and
Phi's rotary embedding is applied in place. Beam search and extra `generate()` options go through `generate()`.
torch.compile (a 30 s compile for every new batch shape) and flash attention's varlen kernel for the decoding steps
were measured and did not pay: see docs/performance.md.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import types
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.phi.modeling_phi import eager_attention_forward

from . import patches
from .prompts import render_prompt

logger = logging.getLogger(__name__)

# SDPA without cuDNN attention. With it (PyTorch 2.11, H200), the same bf16 generation run twice gave different greedy
# text on 38% of rows; without it 500 of 500 rows matched, at 76 instead of 83-89 summaries/s
# (docs/evaluation.md, 2026-11-27 18:05 UTC). Reproducible scores are the default.
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


DECODE_ATTENTION = ("matmul", "sdpa")


def _scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """query @ keys for (batch, groups, dim) x (batch, dim, slots), in float32 (as SDPA's kernels keep their scores).
    On a GPU half-precision inputs are read as they are (bmm's out_dtype gives float32 products); elsewhere they are
    converted first (a CPU is never the fast path)."""
    if query.dtype == torch.float32:
        return torch.bmm(query, keys)
    if query.is_cuda:
        return torch.bmm(query, keys, out_dtype=torch.float32)  # matmul_decode_supported checked it exists
    return torch.bmm(query.float(), keys.float())


# Attention classes whose forward hands decode_attention_forward everything it must know: rotary applied, the
# SlotCache's keys, `scaling`, and for sliding layers `sliding_window`. A class outside this set could pass more
# (attention sinks, softcapping, ALiBi) that the matmul path would silently drop.
MATMUL_DECODE_ATTENTION = frozenset(patches.DECODE_ATTENTION_CLASSES)
LAYER_TYPES = ("full_attention", "sliding_attention")  # what the loop's masks and SlotCache can express


def matmul_decode_supported(model) -> bool:
    """decode_attention_forward covers the attention classes in MATMUL_DECODE_ATTENTION (multi-head, grouped or
    multi-query key/value heads, full or sliding-window layers) without logit softcapping or bidirectional
    attention; on a GPU in half precision it needs bmm's out_dtype (PyTorch >= 2.8); and the transformers version
    must be one it was checked on (sumtune.patches). Other models decode with SDPA and a mask."""
    config, parameter = model.config, next(model.parameters())
    attention = {type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Attention")}
    covered = (bool(attention) and attention <= MATMUL_DECODE_ATTENTION
               and getattr(config, "attn_logit_softcapping", None) is None
               and not getattr(config, "use_bidirectional_attention", False))
    half_on_gpu = parameter.is_cuda and parameter.dtype != torch.float32
    return covered and (not half_on_gpu or _bmm_has_out_dtype()) and patches.enabled("slot_decode_attention")


@functools.cache
def _bmm_has_out_dtype() -> bool:
    """torch.bmm(..., out_dtype=) exists from PyTorch 2.8 on (the project allows older)."""
    try:
        torch.bmm(torch.zeros(1, 1, 1, dtype=torch.float16, device="cuda"),
                  torch.zeros(1, 1, 1, dtype=torch.float16, device="cuda"), out_dtype=torch.float32)
    except (TypeError, RuntimeError):
        return False
    return True


def _hidden_slots(slots: int, position: torch.Tensor, sliding_window: int | None) -> torch.Tensor:
    """(rows, slots), True where row r must not look: slots after its position and, on a sliding-window layer,
    slots `sliding_window` or more behind it (transformers' `kv_idx > q_idx - sliding_window`)."""
    slot = torch.arange(slots, device=position.device)
    hidden = slot > position[:, None]
    if sliding_window is not None:
        hidden |= slot <= position[:, None] - sliding_window
    return hidden


def decode_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                             decode_position=None, sliding_window=None, **kwargs):
    """SDPA, except for greedy_batch's one-token decoding steps over its SlotCache.

    SDPA has no fast kernel for one query over a padded cache: with a mask it takes the memory-efficient kernel (cuDNN's
    is fast but not reproducible, see REPRODUCIBLE_ATTENTION). `decode_position` (rows,): row r attends to cache slots
    0..position[r] (the last `sliding_window` of them on a sliding layer); two batched matrix products read each
    row's keys and values once, softmax in float32 between them (transformers' eager attention, with float32 scores).
    With grouped key/value heads the query is viewed as (rows, kv heads, queries per kv head, dim) against the
    cache's (rows, kv heads, slots, dim): each key/value head is read once for its group and never repeated in
    memory (query head h belongs to kv head h // groups, as transformers' repeat_kv orders them).
    Flash attention's varlen kernel over the same cache (each row's unwritten slots a query-less sequence) was
    measured no faster (its 128-query tiles hold one query here) and dropped (docs/performance.md).
    Registered with transformers' AttentionInterface below; greedy_batch selects it for its decoding steps only.
    """
    if query.shape[2] != 1 or decode_position is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads, slots = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scaling = dim**-0.5 if scaling is None else scaling
    keys = key.reshape(rows * kv_heads, slots, dim)  # views: the cache is (rows, kv heads, slots, dim)
    scores = _scores(query.reshape(rows * kv_heads, groups, dim), keys.transpose(1, 2)) * scaling
    hidden = _hidden_slots(slots, decode_position, sliding_window)
    scores = scores.view(rows, kv_heads, groups, slots).masked_fill_(hidden[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.bmm(weights.view(rows * kv_heads, groups, slots), value.reshape(rows * kv_heads, slots, dim))
    return out.view(rows, heads, 1, dim).transpose(1, 2), None  # (rows, 1 query, heads, dim), as transformers expects


def _layer_types(config) -> list[str]:
    """Each layer's attention kind; configs without `layer_types` (Llama, Mistral) use one kind for every layer."""
    if layer_types := getattr(config, "layer_types", None):
        return list(layer_types)
    sliding = getattr(config, "sliding_window", None) is not None
    return ["sliding_attention" if sliding else "full_attention"] * config.num_hidden_layers


def decode_masks(config, slots: int, position: torch.Tensor, dtype: torch.dtype):
    """4D masks for a decoding step through the model's own attention: each row sees its slots 0..position, on
    sliding-window layers only the last `sliding_window` of them. Boolean for SDPA; additive (0 or the dtype's
    minimum, as transformers' eager_mask) for eager attention, which adds the mask to its scores. A prepared 4D mask
    reaches every layer unchanged, so a model with both kinds of layers gets a dict by layer type, which the models
    that have both (Gemma2/3, Qwen2/3) accept."""
    implementation = config._attn_implementation
    if implementation not in ("sdpa", "eager"):
        raise ValueError(f"Decoding outside the matmul path needs attn_implementation 'sdpa' or 'eager' (a 4D mask), "
                         f"not {implementation!r}")
    masks = {}
    for kind in dict.fromkeys(_layer_types(config)):
        window = config.sliding_window if kind == "sliding_attention" else None
        visible = ~_hidden_slots(slots, position, window)[:, None, None, :]
        if implementation == "eager":
            visible = torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(
                ~visible, torch.finfo(dtype).min)
        masks[kind] = visible
    return next(iter(masks.values())) if len(masks) == 1 else masks


def next_token_logits(causal_lm, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head's logits in float32, capped as the model's own forward caps them (Gemma's
    final_logit_softcapping, in the model's dtype: tanh can round two logits to one value, and greedy then keeps
    the first, as generate() does)."""
    logits = causal_lm.lm_head(hidden)
    if cap := getattr(causal_lm.config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


SLOT_DECODE = "sumtune_slot_decode"
AttentionInterface.register(SLOT_DECODE, decode_attention_forward)


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Run `model` (all its modules share one config) with another registered attention function, then restore."""
    previous = model.config._attn_implementation
    model.config._attn_implementation = name
    try:
        yield
    finally:
        model.config._attn_implementation = previous


def phi_attention_forward(self, hidden_states, position_embeddings, attention_mask, past_key_values=None,
                          **kwargs):
    """transformers' `PhiAttention.forward` with the partial rotary embedding applied in place.

    Phi-2 rotates the first 32 of each head's 80 dimensions; transformers splits q and k, rotates the first part
    (`rotate_half` concatenates its halves) and concatenates the parts again: four copies of q/k per layer, 13% of
    the GPU time of generation (profile in docs/performance.md). Here the rotated halves are
    written back into the projection's output, the same bf16 operations in the same order (x1 cos - x2 sin equals
    x1 cos + (-x2) sin exactly), so the results are bitwise equal (tests/test_generation.py). Used only inside
    greedy_batch (`fused_rotary`), for `PhiAttention` modules without qk_layernorm."""
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    query_states = self.q_proj(hidden_states).view(hidden_shape)  # (rows, seq, heads, dim), contiguous
    key_states = self.k_proj(hidden_states).view(hidden_shape)
    value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    cos, sin = position_embeddings  # (rows, seq, rotary dims), both halves the same
    half = self.rotary_ndims // 2
    cos, sin = cos[..., None, :half], sin[..., None, :half]  # broadcast over heads
    for states in (query_states, key_states):
        x1, x2 = states[..., :half], states[..., half:self.rotary_ndims]
        first, second = x1 * cos - x2 * sin, x2 * cos + x1 * sin
        x1.copy_(first)
        x2.copy_(second)
    query_states, key_states = query_states.transpose(1, 2), key_states.transpose(1, 2)
    if past_key_values is not None:
        key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx)
    attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                              eager_attention_forward)
    attn_output, attn_weights = attention_interface(self, query_states, key_states, value_states, attention_mask,
                                                    dropout=0.0, scaling=self.scaling, **kwargs)
    attn_output = attn_output.reshape(*input_shape, -1).contiguous()
    return self.dense(attn_output), attn_weights


@contextlib.contextmanager
def fused_rotary(model):
    """Phi attention layers run `phi_attention_forward` inside the block (where transformers' version is one it was
    checked on: sumtune.patches); other models are left as they are."""
    patched = [module for module in model.modules() if type(module).__name__ == "PhiAttention"
               and not getattr(module, "qk_layernorm", True) and hasattr(module, "rotary_ndims")
               and "forward" not in vars(module)]  # a forward set on the instance (a hook) stays as it is
    if patched and not patches.enabled("phi_rotary"):
        patched = []
    for module in patched:
        module.forward = types.MethodType(phi_attention_forward, module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward  # back to the class's forward


class SlotCache:
    """Fixed-size KV cache written in place: each row's next token goes to the slot equal to its position (its real
    tokens so far), so a row's keys are always slots 0..position. `slots` is a device tensor the caller moves, so no
    step syncs the host. Buffers are (rows, heads, slots, dim) per layer, as transformers passes keys; a 4D mask or
    the rows' positions hide unwritten slots.

    Duck-typed, not a `transformers.Cache`: the model only calls `update`, and the mask helpers then skip the
    per-layer bookkeeping whose attributes change between transformers versions. The prefill writes through
    `prefill_cache()` instead."""

    def __init__(self, length: int, slots: torch.Tensor):
        """Empty; the prefill (through `prefill_cache()`) allocates each layer's buffers of `length` slots.
        `slots` (rows,): where each row's next token goes, moved in place by the caller."""
        self.length = length
        self.keys, self.values = [], []
        self.slots = slots
        self.rows = torch.arange(slots.shape[0], device=slots.device)

    def prefill_cache(self) -> DynamicCache:
        """The cache to pass the prefill: it writes each layer's keys and values into this cache's buffers."""
        return _PrefillIntoSlots(self)

    def write_prefill(self, key_states, value_states, layer_idx: int):
        """Layer `layer_idx`'s prompt keys and values into new buffers (unwritten slots zeroed: softmax weights of
        0 times uninitialised memory could be NaN); returns the prompt's part of them for the prefill's attention."""
        if layer_idx != len(self.keys):
            raise RuntimeError(f"prefill wrote layer {layer_idx} after {len(self.keys)} layers: out of order")
        rows, heads, prompt_len, dim = key_states.shape
        written = []
        for states, target in ((key_states, self.keys), (value_states, self.values)):
            buffer = states.new_empty(rows, heads, self.length, dim)
            buffer[:, :, :prompt_len] = states
            buffer[:, :, prompt_len:] = 0
            target.append(buffer)
            written.append(buffer[:, :, :prompt_len])
        return tuple(written)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        # key_states: (rows, heads, 1, dim), the token fed in; it lands at (row, slots[row])
        for buffer, states in ((self.keys[layer_idx], key_states), (self.values[layer_idx], value_states)):
            buffer[self.rows, :, self.slots] = states[:, :, 0]
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions come from position_ids, never from here


class _PrefillIntoSlots(DynamicCache):
    """A prefill's cache that stores nothing itself: each layer's keys and values go straight into a SlotCache's
    buffers. A plain DynamicCache would cost two passes over the prompt's cache: its first update concatenates each
    layer's keys and values to an empty tensor, and they would then be copied into the buffers (7% and up to 4% of
    generation's GPU time; this path measured +3-10% in alternation, docs/performance.md). A
    DynamicCache subclass, so that the mask helpers see the empty cache of a prefill from position 0 in every
    transformers version; they run before any layer's update. No layer is ever created, so none is a sliding-window
    layer that would keep only the last window: SlotCache needs slot = position for every layer."""

    def __init__(self, target: SlotCache):
        super().__init__()
        self.target = target

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return self.target.write_prefill(key_states, value_states, layer_idx)


@functools.cache
def _capture_stream(device: int) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


def capture(fn) -> torch.cuda.CUDAGraph:
    """`fn`'s kernels recorded as a CUDA graph (nothing runs yet). Not `torch.cuda.graph`: that empties PyTorch's
    memory cache at every capture, and a capture per batch would then allocate each batch's KV cache from CUDA anew."""
    graph = torch.cuda.CUDAGraph()
    stream = _capture_stream(torch.cuda.current_device())  # one per device, as torch.cuda.graph keeps: cuBLAS keeps
    stream.wait_stream(torch.cuda.current_stream())         # a workspace per stream
    with torch.cuda.stream(stream):
        graph.capture_begin()
        try:
            fn()
        finally:
            graph.capture_end()
    torch.cuda.current_stream().wait_stream(stream)
    return graph


@torch.inference_mode()
def greedy_batch(model, input_ids, lengths, max_new_tokens: int, eos: int, pad: int,
                 min_new_tokens: int = 0, decode_attention: str = "matmul", cuda_graph: bool = True,
                 fuse_rotary: bool = True) -> torch.Tensor:
    """Greedy continuation of a right-padded batch (`lengths`: real tokens per row): (rows, max_new_tokens) token
    ids, `pad` after each row's EOS.

    Same decisions as `generate(do_sample=False)` on each row alone: EOS is banned for the first `min_new_tokens`
    steps, and the loop ends once every row has emitted EOS. `decode_attention` (see decode_attention_forward):
    "matmul" (models outside matmul_decode_supported fall back to "sdpa") or "sdpa": the model's own attention
    (SDPA, or eager where the model was loaded so) with a mask per layer type (decode_masks), as transformers decodes.
    `cuda_graph` (CUDA only): capture one decoding step as a CUDA graph per batch and replay it, so the host no
    longer launches each step's ~1,000 kernels one by one. `fuse_rotary`: Phi attention rotates q and k in place
    (phi_attention_forward) instead of concatenating copies; bitwise the same results.
    """
    with (fused_rotary(model) if fuse_rotary else contextlib.nullcontext(),
          torch.cuda.device(input_ids.device) if input_ids.is_cuda else contextlib.nullcontext()):
        return _greedy_batch(model, input_ids, lengths, max_new_tokens, eos, pad, min_new_tokens, decode_attention,
                             cuda_graph)


def _greedy_batch(model, input_ids, lengths, max_new_tokens, eos, pad, min_new_tokens, decode_attention, cuda_graph):
    if decode_attention not in DECODE_ATTENTION:
        raise ValueError(f"decode_attention must be one of {DECODE_ATTENTION}, got {decode_attention!r}")
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: LoRA layers stay
    if unknown := set(_layer_types(causal_lm.config)) - set(LAYER_TYPES):
        raise ValueError(f"greedy_batch decodes {LAYER_TYPES} layers, not {sorted(unknown)}: pass a generate() "
                         "option (e.g. use_cache=True) to iter_token_ids to decode through model.generate()")
    if decode_attention == "matmul" and not matmul_decode_supported(causal_lm):
        decode_attention = "sdpa"
    rows, prompt_len = input_ids.shape
    length = prompt_len + max_new_tokens
    device = input_ids.device
    cache, position, logits = _prefill(causal_lm, input_ids, lengths, length)

    out = torch.full((rows, max_new_tokens), pad, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    token = torch.zeros(rows, 1, dtype=torch.long, device=device)
    step = torch.zeros(1, dtype=torch.long, device=device)  # index of the token being chosen

    def choose(logits):
        logits[:, eos] = torch.where(step[0] < min_new_tokens, float("-inf"), logits[:, eos])
        chosen = torch.where(done, pad, logits.argmax(-1))
        out.index_copy_(1, step, chosen[:, None])
        done.logical_or_(chosen == eos)
        token.copy_(chosen[:, None])

    def decode():
        step.add_(1)
        position.add_(1)
        mask, extra = None, {}
        if decode_attention == "matmul":
            extra = {"decode_position": position[:, 0]}
        else:
            mask = decode_masks(causal_lm.config, length, position[:, 0], cache.keys[0].dtype)
        hidden = causal_lm.model(input_ids=token, attention_mask=mask, position_ids=position,
                                 past_key_values=cache, use_cache=True, **extra).last_hidden_state
        choose(next_token_logits(causal_lm, hidden[:, -1]))

    choose(logits)
    if bool(done.all()):  # every row stopped at the prefill's token
        return out
    with attention_implementation(causal_lm, SLOT_DECODE) if decode_attention != "sdpa" else contextlib.nullcontext():
        _step_until_done(decode, done, max_new_tokens, device.type == "cuda", cuda_graph)
    return out


def _prefill(causal_lm, input_ids, lengths, length: int):
    """The prompt's forward: (the SlotCache holding its keys and values, each row's position, the first logits).

    Prefill without a padding mask. With right padding every real token has only its own row's earlier real tokens
    before it, so the causal mask alone is exact, positions are plain 0..n-1, and SDPA may run flash attention (any
    padding mask forces its slower memory-efficient kernel). Pads compute values nothing reads: their cache slots are
    overwritten by the row's new tokens before any step reads them, and each row's first token comes from its last
    real position. The prefill writes every layer's keys and values straight into the decoding cache's buffers."""
    position = lengths[:, None].clone() - 1  # position (= cache slot) of the token fed in; moved before each step
    cache = SlotCache(length, position[:, 0])
    with torch.profiler.record_function("sumtune.prefill"):
        hidden = causal_lm.model(input_ids=input_ids, past_key_values=cache.prefill_cache(),
                                 use_cache=True).last_hidden_state
    return cache, position, next_token_logits(causal_lm, hidden[cache.rows, lengths - 1])


def _step_until_done(decode, done, max_new_tokens: int, cuda: bool, cuda_graph: bool) -> None:
    """Run `decode` (one token for every row, all state updated in place) until every row is `done`.

    Whether every row is done is read two steps late, from pinned memory: the host never waits for the step it has
    just queued, so it can queue the next while the GPU works. At most one step runs after the last row's EOS (its
    tokens are pad). Slot k % 2 holds the flag written after step k, read before step k + 2. Every tensor a step reads
    or writes (token, position, step, done, out, the cache) is updated in place, which is what lets a CUDA graph
    replay the step: step 1 runs eagerly (it warms up cuBLAS and the allocator), step 2 is captured, then replayed
    for every later step."""
    flags = [(torch.zeros(1, dtype=torch.bool, pin_memory=cuda), torch.cuda.Event() if cuda else None)
             for _ in range(2)]
    graph = None
    for k in range(1, max_new_tokens):
        flag, event = flags[k % 2]
        if k >= 3:
            if event is not None:
                event.synchronize()
            if bool(flag):
                break
        with torch.profiler.record_function("sumtune.decode_step"):
            if cuda and cuda_graph and k == 2:
                graph = capture(decode)
            if graph is not None:
                graph.replay()
            else:
                decode()
        flag.copy_(done.all(), non_blocking=cuda)
        if event is not None:
            event.record()


def encode_prompts(tokenizer, prompts: list[list[dict]]) -> list[list[int]]:
    """Token ids of each conversational prompt rendered with the chat template (generation prompt included)."""
    return tokenizer([render_prompt(tokenizer, p) for p in prompts], add_special_tokens=False)["input_ids"]


def plan_batches(lengths: list[int], *, max_new_tokens: int, batch_size: int, max_batch_tokens: int | None,
                 num_beams: int = 1) -> list[list[int]]:
    """The batches `iter_token_ids` generates, as lists of indices into `lengths` (prompt token counts)."""
    budget = None if max_batch_tokens is None else max_batch_tokens // num_beams  # each beam holds its own cache
    return list(token_budget_batches(lengths, max_new_tokens, batch_size, budget))


def batch_cost(lengths: list[int], batch: list[int], max_new_tokens: int) -> int:
    """Tokens a batch holds in its KV cache: rows x (longest prompt + new tokens); its work is about proportional."""
    return len(batch) * (max(lengths[i] for i in batch) + max_new_tokens)


@torch.inference_mode()
def iter_token_ids(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int, num_beams: int = 1,
                   batch_size: int, max_batch_tokens: int | None = None, min_new_tokens: int = 0,
                   batches: list[list[int]] | None = None, encoded: list[list[int]] | None = None,
                   cudnn_attention: bool = False, decode_attention: str = "matmul", cuda_graph: bool = True,
                   fuse_rotary: bool = True,
                   **generate_kwargs) -> Iterator[tuple[int, list[int]]]:
    """Yield (index into prompts, new token ids up to and excluding EOS) batch by batch, in generation order.

    `batches` (lists of indices into prompts) replaces the batching of `plan_batches`: data-parallel evaluation
    passes each process its share of the batches one process would make, so rows are generated in the same batches.
    `encoded`: the prompts' token ids when the caller already has them (`encode_prompts`).
    Length and batch size have no defaults here: `decoding.Decoding` holds the project's (its `batching()`);
    without `max_batch_tokens` batches are cut by rows alone.
    Greedy through `greedy_batch` unless num_beams > 1 or `generate_kwargs` are given (they go to `model.generate`,
    e.g. `cache_implementation="static"`). `cudnn_attention`: let SDPA use cuDNN (faster, not reproducible; see
    REPRODUCIBLE_ATTENTION). The switch is set only while a batch computes, never while the caller holds a row.
    `decode_attention`, `cuda_graph`, `fuse_rotary`: see greedy_batch.
    """
    if decode_attention not in DECODE_ATTENTION:
        raise ValueError(f"decode_attention must be one of {DECODE_ATTENTION}, got {decode_attention!r}")
    if encoded is None:
        encoded = encode_prompts(tokenizer, prompts)
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if batches is None:
        batches = plan_batches([len(ids) for ids in encoded], max_new_tokens=max_new_tokens, batch_size=batch_size,
                               max_batch_tokens=max_batch_tokens, num_beams=num_beams)
    for batch in batches:
        # The own loop only where its transformers conventions were checked (patches: slot_cache_greedy)
        greedy = num_beams == 1 and not generate_kwargs and patches.enabled("slot_cache_greedy")
        # The own greedy loop prefills right-padded rows (see greedy_batch); generate() continues from the last
        # position, so it takes left padding (it derives position_ids from the attention mask).
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding_side="right" if greedy else "left",
                               return_tensors="pt").to(device)
        with contextlib.nullcontext() if cudnn_attention else sdpa_kernel(REPRODUCIBLE_ATTENTION):
            if greedy:
                new = greedy_batch(model, inputs["input_ids"], inputs["attention_mask"].sum(-1), max_new_tokens, eos,
                                   pad, min_new_tokens, decode_attention, cuda_graph, fuse_rotary)
            else:
                new = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                     num_beams=num_beams, eos_token_id=eos, pad_token_id=pad,
                                     **{"do_sample": False} | generate_kwargs)[:, inputs["input_ids"].shape[1]:]
        for i, ids in zip(batch, new.tolist(), strict=True):
            yield i, ids[:ids.index(eos)] if eos in ids else ids


def iter_summaries(model, tokenizer, prompts: list[list[dict]], **kwargs) -> Iterator[tuple[int, str]]:
    """Yield (index into prompts, summary) batch by batch, in generation order. See `iter_token_ids`."""
    for i, ids in iter_token_ids(model, tokenizer, prompts, **kwargs):
        yield i, tokenizer.decode(ids, skip_special_tokens=True).strip()
