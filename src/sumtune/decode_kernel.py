"""One decoding step's attention as a Triton kernel: each row reads only its written cache slots.

PyTorch has no kernel for one query over a cache whose rows end at different slots: SDPA with a mask takes its
memory-efficient kernel, and `generation.decode_attention_forward`'s two batched matrix products read every slot of
the cache, each as a cuBLAS batched matrix-vector product. This kernel runs one program per (row, key/value head):
it streams that head's keys and values for slots 0..position once (only the last `sliding_window` on a sliding
layer), with an online softmax in float32, for the whole group of query heads that share the head. Used by
greedy_batch's decoding steps with `decode_attention="triton"` on CUDA; Triton is not needed anywhere else.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def triton_available() -> bool:
    """Triton imports (it ships with PyTorch's CUDA builds, not its CPU ones)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def decode_attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, pos_ptr, scale,
                                stride_qr, stride_qh, stride_kr, stride_kh, stride_ks,
                                stride_or, stride_oh,
                                GROUPS: tl.constexpr, GROUPS_PAD: tl.constexpr, DIM: tl.constexpr,
                                DIM_PAD: tl.constexpr, BLOCK: tl.constexpr, WINDOW: tl.constexpr):
        row = tl.program_id(0)
        kv_head = tl.program_id(1)
        position = tl.load(pos_ptr + row).to(tl.int32)
        group = tl.arange(0, GROUPS_PAD)
        dim = tl.arange(0, DIM_PAD)
        group_ok = group < GROUPS
        dim_ok = dim < DIM
        heads = kv_head * GROUPS + group
        q = tl.load(q_ptr + row * stride_qr + heads[:, None] * stride_qh + dim[None, :],
                    mask=group_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
        best = tl.full([GROUPS_PAD], float("-inf"), tl.float32)
        total = tl.zeros([GROUPS_PAD], tl.float32)
        acc = tl.zeros([GROUPS_PAD, DIM_PAD], tl.float32)
        first = position * 0
        if WINDOW > 0:  # transformers' sliding window: slot > position - window
            first = tl.maximum(position - WINDOW + 1, 0)
        keys = k_ptr + row * stride_kr + kv_head * stride_kh
        values = v_ptr + row * stride_kr + kv_head * stride_kh
        start = (first // BLOCK) * BLOCK
        while start <= position:  # a while loop: Triton's interpreter (the CPU test) takes no loaded range bounds
            slot = start + tl.arange(0, BLOCK)
            slot_ok = (slot >= first) & (slot <= position)
            ok = slot_ok[:, None] & dim_ok[None, :]
            k = tl.load(keys + slot[:, None] * stride_ks + dim[None, :], mask=ok, other=0.0).to(tl.float32)
            scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2) * scale  # (groups, slots)
            scores = tl.where(slot_ok[None, :], scores, float("-inf"))
            new_best = tl.maximum(best, tl.max(scores, axis=1))
            weights = tl.exp(scores - new_best[:, None])
            rescale = tl.exp(best - new_best)
            total = total * rescale + tl.sum(weights, axis=1)
            v = tl.load(values + slot[:, None] * stride_ks + dim[None, :], mask=ok, other=0.0).to(tl.float32)
            acc = acc * rescale[:, None] + tl.sum(weights[:, :, None] * v[None, :, :], axis=1)
            best = new_best
            start += BLOCK
        out = acc / total[:, None]
        tl.store(o_ptr + row * stride_or + heads[:, None] * stride_oh + dim[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=group_ok[:, None] & dim_ok[None, :])

    return decode_attention_kernel


def _pad(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def triton_decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, position: torch.Tensor,
                            scaling: float, sliding_window: int | None = None) -> torch.Tensor:
    """query (rows, heads, 1, dim); key, value (rows, kv heads, slots, dim), each row's slots 0..position[row]
    written; returns (rows, heads, dim) in value's dtype: softmax(q k / sqrt(d)) v over those slots (the last
    `sliding_window` of them when set). Query head h reads key/value head h // (heads // kv heads)."""
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    q = query[:, :, 0]
    if q.stride(-1) != 1:
        q = q.contiguous()
    if key.stride(-1) != 1 or value.stride() != key.stride():
        raise ValueError("triton_decode_attention needs keys and values of one contiguous layout")
    out = torch.empty(rows, heads, dim, dtype=value.dtype, device=value.device)
    dim_pad = _pad(dim)
    block = max(16, min(128, 8192 // (_pad(groups) * dim_pad)))  # (groups x slots x dim) products a block
    _kernel()[(rows, kv_heads)](
        q, key, value, out, position, float(scaling),
        q.stride(0), q.stride(1), key.stride(0), key.stride(1), key.stride(2), out.stride(0), out.stride(1),
        GROUPS=groups, GROUPS_PAD=_pad(groups), DIM=dim, DIM_PAD=dim_pad, BLOCK=block,
        WINDOW=sliding_window or 0)
    return out
