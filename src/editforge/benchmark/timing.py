"""Timers that split a pipeline call into text encoding / denoise / VAE, and FLOP accounting."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class StageTimer:
    """Wraps the text encoder, transformer and VAE of a pipeline; accumulates seconds and FLOPs per stage."""

    def __init__(self, pipe, device: str):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.transformer_flops = 0.0
        self._originals = []
        self._wrap(pipe.text_encoder, "forward", "text")
        self._wrap(pipe.transformer, "forward", "denoise", count_flops=True)
        self._wrap(pipe.vae, "encode", "vae")
        self._wrap(pipe.vae, "decode", "vae")
        self._config = pipe.transformer.config

    def _wrap(self, module, method: str, stage: str, count_flops: bool = False) -> None:
        original = getattr(module, method)
        self._originals.append((module, method, original))

        def timed(*args, **kwargs):
            synchronize(self.device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            synchronize(self.device)
            self.seconds[stage] += time.perf_counter() - start
            if count_flops:
                self.transformer_flops += transformer_flops(
                    self._config, kwargs["hidden_states"].shape[1], kwargs["encoder_hidden_states"].shape[1],
                    kwargs["hidden_states"].shape[0],
                )
            return out

        setattr(module, method, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.transformer_flops = 0.0

    def remove(self) -> None:
        for module, method, original in self._originals:
            setattr(module, method, original)


def transformer_flops(config, image_tokens: int, text_tokens: int, batch: int = 1) -> float:
    """Matmul FLOPs of one transformer forward: per block, each token through its stream's q/k/v/out and
    MLP (4 D^2 + 2 D F multiply-adds), plus joint attention over all tokens (QK^T and AV: 2 N^2 D each)."""
    width = config.num_attention_heads * config.attention_head_dim
    mlp = 4 * width
    tokens = image_tokens + text_tokens
    linear = 2 * tokens * (4 * width * width + 2 * width * mlp)
    attention = 4 * tokens * tokens * width
    return float(batch * config.num_layers * (linear + attention))


def matmul_rate(device: str, dtype: torch.dtype) -> float:
    """Measured dense matmul FLOP/s on this device and dtype: the ceiling the model is compared with."""
    n = 8192 if device.startswith("cuda") else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if device.startswith("cuda") else 5
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


@contextlib.contextmanager
def peak_memory(device: str):
    """Yields a dict that holds the peak allocated GiB of the block once it ends (CUDA only)."""
    result = {"peak_gib": None}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    yield result
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
