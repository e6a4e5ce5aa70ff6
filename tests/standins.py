"""Stand-ins for hardware this machine does not have, so GPU-only branches run here instead of being skipped."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

HALF = (torch.bfloat16, torch.float16)


def _check_kernel_inputs(q, k, v):
    # what the flash-attn kernels themselves reject (diffusers checks it only with DIFFUSERS_ATTN_CHECKS=1)
    if q.dtype not in HALF or k.dtype != q.dtype or v.dtype != q.dtype:
        raise RuntimeError(f"FlashAttention only supports fp16 and bf16 data types, got {q.dtype}")


def _attention(q, k, v, scale):
    """[batch, seq, heads, dim] attention, the kernels' layout."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          scale=scale).transpose(1, 2)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("Trying to backward through _diffusers_flash_attn_3._flash_attn_forward.default but no "
                           "autograd formula was registered. Please use register_autograd to add one.")


@pytest.fixture
def hopper_with_flash_attention(monkeypatch):
    """This CPU as a Hopper GPU with FlashAttention 2 and 3 installed, as far as EditForge and diffusers can tell.

    EditForge's backend choice sees compute capability 9.0 and both packages. diffusers' own `flash` and
    `_flash_3` backends run, with their own checks (they raise on any attention mask; with attention checks
    on, their registered constraints refuse inputs that are not bf16/fp16), on stand-in kernels that compute
    attention with SDPA and refuse what the real kernels refuse: any dtype but bf16/fp16, and for diffusers'
    FlashAttention 3 op, a backward pass when diffusers registers no autograd formula for it (0.42 does not).
    Returns a Counter of kernel calls, and of native-backend calls with and without a mask.
    """
    from diffusers.models import attention_dispatch as dispatch

    from editforge.models import speed

    calls: Counter = Counter()
    monkeypatch.setattr(speed, "cuda_capability", lambda device: (9, 0))
    monkeypatch.setattr(speed, "kernel_installed", lambda package: package in ("flash_attn", "flash_attn_interface"))
    monkeypatch.setattr(dispatch, "_CAN_USE_FLASH_ATTN", True)
    monkeypatch.setattr(dispatch, "_CAN_USE_FLASH_ATTN_3", True)
    monkeypatch.setattr(dispatch._AttentionBackendRegistry, "_checks_enabled", True)

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        return_attn_probs=False):
        _check_kernel_inputs(q, k, v)
        calls["flash"] += 1
        return _attention(q, k, v, softmax_scale)  # flash-attn 2 has a backward: so has SDPA

    fa3_has_backward = dispatch._wrapped_flash_attn_3._backward_fn is not None

    def wrapped_flash_attn_3(q, k, v, softmax_scale=None, causal=False, **kernel_options):
        _check_kernel_inputs(q, k, v)
        calls["_flash_3"] += 1
        out = _attention(q, k, v, softmax_scale)
        lse = torch.zeros(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32)
        return (out if fa3_has_backward else _NoBackward.apply(out)), lse

    monkeypatch.setattr(dispatch, "flash_attn_func", flash_attn_func)
    monkeypatch.setattr(dispatch, "_wrapped_flash_attn_3", wrapped_flash_attn_3)

    native = dispatch._AttentionBackendRegistry._backends[dispatch.AttentionBackendName.NATIVE]

    def counted_native(*args, **kwargs):
        calls["native, masked" if kwargs.get("attn_mask") is not None else "native"] += 1
        return native(*args, **kwargs)

    monkeypatch.setitem(dispatch._AttentionBackendRegistry._backends, dispatch.AttentionBackendName.NATIVE,
                        counted_native)
    return calls
