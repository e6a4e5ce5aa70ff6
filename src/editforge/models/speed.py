"""The fast path: what measurably pays and changes nothing about the result.

- attention backend: the fastest diffusers attention backend whose kernel is installed and takes the dtype
  (FlashAttention 3, then 2, then cuDNN SDPA on a GPU in bf16/fp16; PyTorch's SDPA otherwise);
- regional `torch.compile` of the 60 repeated transformer blocks (one block compiled, reused 60 times;
  opt-in: the first image pays the compile);
- text-embedding reuse: when the prompt and the condition images repeat (regenerating a row, retries of
  the quality gate, a dataset with shared references), the Qwen2.5-VL encoder is not run again.
LoRAs are fused by `load_pipeline` already.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.util
import inspect
from typing import Any, NamedTuple

import torch

EMBEDDING_CACHE_SIZE = 32


class FastBackend(NamedTuple):
    name: str  # diffusers' attention backend
    package: str | None  # the kernel's Python package
    min_capability: tuple[int, int]  # CUDA compute capability
    trains: bool  # has a backward pass


# Fastest first. Each takes only bf16/fp16 inputs and no attention mask (diffusers' flash backends raise on any
# mask; the kernels reject fp32). diffusers 0.42 registers no autograd formula for its FlashAttention 3 op, so
# training uses FlashAttention 2 or cuDNN. cuDNN's SDPA needs an Ampere or newer GPU.
FAST_BACKENDS = (
    FastBackend("_flash_3", "flash_attn_interface", (9, 0), trains=False),
    FastBackend("flash", "flash_attn", (8, 0), trains=True),
    FastBackend("_native_cudnn", None, (8, 0), trains=True),
)
# PyTorch's SDPA: any dtype, any mask, any device; it picks its own kernel.
GENERAL_BACKEND = "native"
HALF_PRECISION = (torch.bfloat16, torch.float16)


def cuda_capability(device: str) -> tuple[int, int] | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(torch.device(device))


def kernel_installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def best_attention_backend(device: str, dtype: torch.dtype, *, training: bool = False) -> str:
    """The fastest attention backend that runs on `device` with `dtype` inputs (and backward, for `training`)."""
    capability = cuda_capability(device)
    if capability is None or dtype not in HALF_PRECISION:
        return GENERAL_BACKEND
    for backend in FAST_BACKENDS:
        if (capability >= backend.min_capability and (backend.trains or not training)
                and (backend.package is None or kernel_installed(backend.package))):
            return backend.name
    return GENERAL_BACKEND


def attention_backend_of(transformer) -> str:
    """The backend the transformer's attention layers dispatch to (diffusers' default: native)."""
    for module in transformer.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is not None:
            return getattr(backend, "value", backend)
    return GENERAL_BACKEND


@contextlib.contextmanager
def attention_for_mask(transformer, mask: torch.Tensor | None):
    """Run what happens inside (forward and backward) on a backend that takes `mask` when there is one.

    Only a batch of prompts of different lengths has a padding mask, and no fast backend takes one.
    """
    backend = attention_backend_of(transformer)
    if mask is None or backend == GENERAL_BACKEND:
        yield
        return
    transformer.set_attention_backend(GENERAL_BACKEND)
    try:
        yield
    finally:
        transformer.set_attention_backend(backend)


def apply_fast_path(pipe, *, device: str, attention: str | None = "auto", compile: bool = False,
                    reuse_embeddings: bool = True) -> dict[str, Any]:
    """Switch `pipe` to the fast path; returns what was applied (for the PNG metadata and benchmarks)."""
    applied: dict[str, Any] = {}
    if attention:
        backend = best_attention_backend(device, pipe.transformer.dtype) if attention == "auto" else attention
        pipe.transformer.set_attention_backend(backend)
        applied["attention"] = backend
    if compile:
        compile_blocks(pipe.transformer)
        applied["compile"] = "repeated-blocks"
    if reuse_embeddings:
        memoize_prompt_encoding(pipe)
        applied["embedding_cache"] = EMBEDDING_CACHE_SIZE
    return applied


def compile_blocks(transformer, *, backend: str = "inductor") -> None:
    """Regional torch.compile: the repeated transformer block, compiled once and reused by every block.

    fullgraph: a graph break is an error, not a silent slow path. dynamic: sequence lengths vary with the
    output's aspect ratio and the number of reference images; with dynamic shapes one graph serves them all
    (`editforge.plan.compile_check` counts it), where static ones would recompile for every new size.
    """
    transformer.compile_repeated_blocks(fullgraph=True, dynamic=True, backend=backend)


def _image_digest(image) -> str:
    if hasattr(image, "tobytes"):  # PIL
        return hashlib.blake2b(image.tobytes() + repr((image.size, image.mode)).encode(), digest_size=16).hexdigest()
    if isinstance(image, torch.Tensor):
        return hashlib.blake2b(image.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest()
    raise TypeError(type(image))


def memoize_prompt_encoding(pipe) -> None:
    """Wrap `pipe.encode_prompt` in an LRU keyed by the prompt and the exact condition images."""
    if getattr(pipe, "_editforge_memoized", False):
        return
    original = pipe.encode_prompt
    signature = inspect.signature(original)
    cache: collections.OrderedDict = collections.OrderedDict()

    def encode_prompt(*args, **kwargs):
        call = signature.bind(*args, **kwargs).arguments
        if call.get("prompt_embeds") is not None or call.get("prompt") is None:
            return original(*args, **kwargs)
        image = call.get("image")
        images = image if isinstance(image, (list, tuple)) else ([] if image is None else [image])
        key = (
            repr(call["prompt"]),
            tuple(_image_digest(i) for i in images),
            repr(sorted((k, str(v)) for k, v in call.items() if k not in ("prompt", "image"))),
        )
        if key not in cache:
            cache[key] = original(*args, **kwargs)
            if len(cache) > EMBEDDING_CACHE_SIZE:
                cache.popitem(last=False)
        cache.move_to_end(key)
        embeds, mask = cache[key]
        # clones: the pipeline may modify what it gets back in place
        return embeds.clone(), None if mask is None else mask.clone()

    pipe.encode_prompt = encode_prompt
    pipe._editforge_memoized = True
    pipe.editforge_embedding_cache = cache
