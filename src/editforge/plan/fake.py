"""A fake GPU: EditForge's own code on full-size models, with shapes, dtypes, FLOPs and memory but no data.

    with FakeGPU() as gpu:
        transformer = gpu.build(lambda: QwenImageTransformer2DModel(**config), torch.bfloat16)
        with gpu.syncs.region("denoise"):
            ...                                   # any EditForge code, with device=gpu.device
    gpu.syncs.events                              # what would have stalled the GPU, and where

Built on PyTorch's `FakeTensorMode`: every tensor has a shape, dtype and device and no storage, so a
20B-parameter transformer costs nothing. The simulated GPU is torch's "meta" device: on this CPU-only build
a fake "cuda" tensor fails wherever torch's C++ asks for a CUDA device guard (indexing, `.contiguous()`,
the autograd engine), while "meta" behaves like an accelerator everywhere: it is a device of its own, so a
copy to "cpu" is a copy to the host. Three things are added, each for a reason found by running the real
pipelines through it:

- **Known values.** Small tensors whose values are known (token ids, attention masks, image grids,
  scheduler sigmas, position ids) are computed for real beside their fake twin. The vision tower and
  mRoPE need them: `repeat_interleave`, `.tolist()` and `torch.tensor([...])` on those values decide
  shapes. Anything derived from weights stays fake: nothing the model computes is ever "known". Host
  work on host data (PIL -> tensor preprocessing) simply runs for real.
- **Fused attention as a GPU runs it.** SDPA picks its kernel by device; on "meta" it would take the math
  path, which materialises the attention matrix (GBs a GPU never allocates) and counts its FLOPs as
  `bmm`. `F.scaled_dot_product_attention` is replaced for the duration by the fused CUDA operators
  (`_scaled_dot_product_flash_attention`, `_efficient_attention` when a mask is given) whose meta kernels
  have the memory of the real kernels and whose FLOPs torch's counter knows. A replaced function, not a
  mode: gradient checkpointing recomputes in the backward pass, where torch function modes are off.
- **Host syncs.** Every operation that makes the host wait for the GPU (`.item()`, `.tolist()`,
  `nonzero`, a data-dependent shape, a copy from GPU to host) is recorded with the line of code that
  asked for it, per named region.
Module conversions (`.to(dtype)`, `.to(device)`) of fake parameters replace the Parameter objects:
torch's in-place tensor swap refuses fake tensors that carry weak references.
"""

from __future__ import annotations

import contextlib
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import (
    DataDependentOutputException, DynamicOutputShapeException, FakeTensor, FakeTensorMode, unset_fake_temporarily,
)
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten
DEVICE = torch.device("meta")  # the simulated GPU (see the module docstring)
# Which tensors may carry known values: integer and boolean ones up to this size (ids, masks, grids,
# positions), floating ones only up to a few elements (a scheduler's sigmas, a timestep). Pixels, latents and
# noise are data: known, they would drag the model's arithmetic onto the host.
KNOWN_NUMEL = 1 << 16
KNOWN_FLOAT_NUMEL = 64


def _may_be_known(tensor: torch.Tensor) -> bool:
    limit = KNOWN_FLOAT_NUMEL if tensor.is_floating_point() or tensor.is_complex() else KNOWN_NUMEL
    return tensor.numel() <= limit
# Ops whose result the host must read before it can go on: the GPU queue drains first.
SYNC_OPS = {
    aten._local_scalar_dense.default: "item",
    aten.nonzero.default: "nonzero",
    aten.masked_select.default: "masked_select",
    aten.repeat_interleave.Tensor: "repeat_interleave",
    aten.unique_consecutive.default: "unique_consecutive",
    aten._unique2.default: "unique",
    aten.equal.default: "equal",
    aten.is_nonzero.default: "is_nonzero",
}
# Factories of uninitialised memory and random draws: their values mean nothing (a model's fresh weights).
_NEVER_KNOWN = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided,
                aten.uniform_, aten.normal_, aten.rand, aten.randn, aten.randint, aten.rand_like, aten.randn_like,
                aten.randint_like, aten.bernoulli_, aten.bernoulli, aten.exponential_, aten.random_, aten.randperm}
_INDEXING_OPS = (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default)
_THIS_FOLDER = str(Path(__file__).parent)
_LIBRARY_FRAGMENTS = ("/torch/", "/contextlib.py", "/functools.py")


@dataclass(frozen=True)
class SyncEvent:
    region: str
    kind: str    # item, nonzero, ..., device-to-host copy, torch.tensor(gpu values)
    where: str   # file:line of the code that asked for it, outside torch


@dataclass
class SyncLog:
    """Host syncs, grouped by the region (a name the caller gives) they happened in."""

    events: list[SyncEvent] = field(default_factory=list)
    current: str = "(outside)"
    muted: bool = False  # inside a .tolist(): one sync, however many elements it reads

    @contextlib.contextmanager
    def region(self, name: str) -> Iterator[None]:
        outer, self.current = self.current, name
        try:
            yield
        finally:
            self.current = outer

    def record(self, kind: str) -> None:
        if not self.muted:
            self.events.append(SyncEvent(self.current, kind, _caller()))

    def count(self, region: str) -> int:
        return sum(e.region == region for e in self.events)

    def summary(self, region: str) -> list[dict]:
        """The syncs of `region` as [{"kind", "where", "count"}], most frequent first."""
        counts = Counter((e.kind, e.where) for e in self.events if e.region == region)
        return [{"kind": kind, "where": where, "count": n} for (kind, where), n in counts.most_common()]


def _caller() -> str:
    """The innermost frame outside torch and this folder: the line that asked for the value."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename.replace("\\", "/")
        if name.startswith(_THIS_FOLDER) or any(part in name for part in _LIBRARY_FRAGMENTS):
            continue
        marker = "site-packages/"
        short = name.split(marker, 1)[1] if marker in name else name.rsplit("/src/", 1)[-1]
        return f"{short}:{frame.lineno}"
    return "?"


def _on_gpu(tensors) -> bool:
    return any(t.device == DEVICE for t in tensors)


def _target_device(kwargs: dict) -> torch.device:
    return torch.device(kwargs.get("device") or "cpu")


class _KnownValues(TorchDispatchMode):
    """Computes ops on known values for real and logs host syncs. Sits above FakeTensorMode."""

    def __init__(self, fake_mode: FakeTensorMode, syncs: SyncLog):
        super().__init__()
        self.fake_mode = fake_mode
        self.syncs = syncs
        self.values: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.unknown_reads: list[str] = []  # values the plan had to assume (see _assume)

    def value(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The real value behind `tensor` (itself if it is a real host tensor), or None if it is unknown."""
        if isinstance(tensor, FakeTensor):
            return self.values.get(tensor)
        return tensor if tensor.device.type == "cpu" else None

    def python_value(self, tensor: torch.Tensor):
        value = self.value(tensor)
        if value is None:
            raise RuntimeError("the plan asked for the value of a fake tensor computed from model weights")
        return value.tolist()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        self._log_sync(func, kwargs, tensors)
        if func is aten._local_scalar_dense.default and self.value(tensors[0]) is None:
            return self._assume(tensors[0])
        on_host = _target_device(kwargs).type == "cpu"
        if tensors and on_host and not any(isinstance(t, FakeTensor) or t.device.type != "cpu" for t in tensors):
            with unset_fake_temporarily():  # host work on host data (image preprocessing): done for real
                return func(*args, **kwargs)
        if func in _NEVER_KNOWN or func._overloadpacket in _NEVER_KNOWN:
            self._forget_mutated(func, args)  # uninitialised memory or random numbers: values nobody knows
        elif all(_may_be_known(t) and self.value(t) is not None for t in tensors):
            result = self._run_for_real(func, args, kwargs, tensors)
            if result is not NotImplemented:
                return result
        if func in _INDEXING_OPS and any(self._known_mask(i) for i in args[1]):
            args = (args[0], self._mask_positions(args[1]), *args[2:])
        self._forget_mutated(func, args)
        # real inputs (pixels from the processor, ...) join the fake world; the fake mode then answers
        args, kwargs = tree_map(self._fake, (args, kwargs))
        return func(*args, **kwargs)

    def _assume(self, tensor: torch.Tensor):
        """The host reads a value computed from the weights (a loss, a norm): unknowable here. The run goes on
        with 0 (finite, so checks such as "stop on a nan loss" pass), and the read is listed."""
        self.unknown_reads.append(_caller())
        return False if tensor.dtype == torch.bool else 0 if not tensor.is_floating_point() else 0.0

    def _log_sync(self, func, kwargs, tensors) -> None:
        if func in SYNC_OPS and _on_gpu(tensors):
            self.syncs.record(SYNC_OPS[func])
        elif func in (aten._to_copy.default, aten.copy_.default) and tensors:
            source = tensors[1] if func is aten.copy_.default else tensors[0]
            target = tensors[0].device if func is aten.copy_.default else torch.device(kwargs.get("device") or source.device)
            if source.device == DEVICE and target.type == "cpu":
                self.syncs.record("device-to-host copy")

    def _run_for_real(self, func, args, kwargs, tensors):
        real_args, real_kwargs = tree_map(self._real, (args, kwargs))
        if "device" in real_kwargs and real_kwargs["device"] is not None:
            real_kwargs = {**real_kwargs, "device": torch.device("cpu")}  # values live on the host
        try:
            with unset_fake_temporarily():
                out = func(*real_args, **real_kwargs)
        except (RuntimeError, NotImplementedError, TypeError):
            return NotImplemented  # an op that wants the device itself: the fake mode answers
        outs = tree_flatten(out)[0]
        if not any(isinstance(o, torch.Tensor) for o in outs):
            return out  # a Python value (.item(), .tolist(), equal): the host has it now
        if any(isinstance(o, torch.Tensor) and not _may_be_known(o) for o in outs):
            return NotImplemented  # a big or data-like result (torch.zeros(8192, 3072)): fake is enough
        device = tensors[0].device if tensors else _target_device(kwargs)
        try:
            fake_out = func(*args, **kwargs)  # the fake twin: device, dtype and strides as the fake mode says
        except (DynamicOutputShapeException, DataDependentOutputException):
            fake_out = tree_map(lambda o: self._twin(o, device), out)  # its shape comes from the value
        for fake, value in zip(tree_flatten(fake_out)[0], outs):
            if isinstance(fake, FakeTensor) and isinstance(value, torch.Tensor):
                self.values[fake] = value
        return fake_out

    def _known_mask(self, index) -> bool:
        return isinstance(index, torch.Tensor) and index.dtype == torch.bool and self.value(index) is not None

    def _mask_positions(self, indices: list) -> list:
        """x[mask] with a known boolean mask -> x[positions]: what torch does (a sync when the mask is on the
        GPU), done here because the fake mode cannot size the result of `nonzero` itself."""
        positions = []
        for index in indices:
            if not self._known_mask(index):
                positions.append(index)
                continue
            if _on_gpu([index]):
                self.syncs.record("boolean mask index")
            with unset_fake_temporarily():
                columns = self.value(index).nonzero().unbind(1)
            for column in columns:
                positions.append(self._twin_known(column, index.device))
        return positions

    def _twin_known(self, value: torch.Tensor, device: torch.device) -> torch.Tensor:
        twin = self._twin(value, device)
        self.values[twin] = value
        return twin

    def _forget_mutated(self, func, args) -> None:
        """A known tensor written by an op with unknown inputs is no longer known."""
        for argument, value in zip(func._schema.arguments, args):
            if argument.alias_info is not None and argument.alias_info.is_write and isinstance(value, FakeTensor):
                self.values.pop(value, None)

    def _fake(self, x):
        if not isinstance(x, torch.Tensor) or isinstance(x, FakeTensor):
            return x
        fake = self.fake_mode.from_tensor(x)
        if _may_be_known(x):
            self.values[fake] = x
        return fake

    def _twin(self, value, device: torch.device):
        if not isinstance(value, torch.Tensor):
            return value
        fake = self.fake_mode.from_tensor(value)
        return fake if device.type == "cpu" else aten._to_copy.default(fake, device=device)

    def _real(self, x):
        return self.values[x] if isinstance(x, FakeTensor) else x


class _KnownTensorData(TorchFunctionMode):
    """`torch.tensor([...])` of known fake tensors: their values (a host read of GPU values is a sync);
    `.tolist()` of a GPU tensor: one sync."""

    def __init__(self, known: _KnownValues):
        super().__init__()
        self.known = known
        self._reading: str | None = None  # the line whose `.tolist()` is reading elements

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        if name == "item" and _on_gpu(args[:1]):
            # `.tolist()` reads its elements with one `item` each, back to back from one line: one wait for
            # the host, so one sync (its elements are not views under inference_mode, so they are told apart
            # by their caller and by nothing else running between them).
            where = _caller()
            if where != self._reading:
                self.known.syncs.record("item")
            self._reading = where
            self.known.syncs.muted = True
            try:
                return func(*args, **kwargs)
            finally:
                self.known.syncs.muted = False
        self._reading = None
        if func is torch.tensor and args:
            fakes = [x for x in tree_flatten(args[0])[0] if isinstance(x, FakeTensor)]
            if fakes:
                if _on_gpu(fakes):
                    self.known.syncs.record("torch.tensor(gpu values)")
                data = tree_map(lambda x: self.known.python_value(x) if isinstance(x, FakeTensor) else x, args[0])
                args = (data, *args[1:])
            device = kwargs.pop("device", None)
            if device is not None and torch.device(device).type != "cpu":
                # made on the host, then copied over, as torch does: the copy's value stays known
                return func(*args, **kwargs).to(device)
        return func(*args, **kwargs)


def fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    """What SDPA runs on a GPU: flash attention without a mask, memory-efficient attention with one."""
    if query.device.type == "cpu":
        return _SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                     scale=scale, enable_gqa=enable_gqa)
    if enable_gqa and key.shape[1] != query.shape[1]:
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, 1), value.repeat_interleave(repeat, 1)
    if attn_mask is None and query.dtype in (torch.float16, torch.bfloat16):
        return aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                        scale=scale)[0]
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~attn_mask, float("-inf"))
    if attn_mask is not None:
        attn_mask = attn_mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    return aten._scaled_dot_product_efficient_attention(query, key, value, attn_mask, query.requires_grad,
                                                        dropout_p, is_causal, scale=scale)[0]


_SDPA = F.scaled_dot_product_attention


@contextlib.contextmanager
def fake_module_conversions() -> Iterator[None]:
    """`module.to(...)`, quantizers and the like work on modules with fake parameters (see `_apply_replacing`)."""
    original = torch.nn.Module._apply
    torch.nn.Module._apply = _apply_replacing(original)
    try:
        yield
    finally:
        torch.nn.Module._apply = original


def _apply_replacing(original):
    """`Module._apply` that converts fake parameters by replacing them (torch's swap refuses them)."""

    def _apply(self, fn, recurse=True):
        params = [p for p in self._parameters.values() if p is not None]
        if not any(isinstance(p, FakeTensor) for p in params):
            return original(self, fn, recurse)
        if recurse:
            for child in self.children():
                child._apply(fn, recurse)
        for name, param in list(self._parameters.items()):
            if param is None:
                continue
            with torch.no_grad():
                applied = fn(param)
            if applied is not param:
                self._parameters[name] = torch.nn.Parameter(applied, requires_grad=param.requires_grad)
        for name, buffer in list(self._buffers.items()):
            if buffer is not None:
                self._buffers[name] = fn(buffer)
        return self

    return _apply


class FakeGPU:
    """The context in which full-size models are built and run; see the module docstring."""

    device = DEVICE

    def __init__(self):
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.syncs = SyncLog()
        self.known = _KnownValues(self.mode, self.syncs)
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "FakeGPU":
        stack = contextlib.ExitStack()
        stack.enter_context(fake_module_conversions())
        F.scaled_dot_product_attention = fused_attention
        stack.callback(setattr, F, "scaled_dot_product_attention", _SDPA)
        stack.enter_context(self.mode)
        stack.enter_context(self.known)
        stack.enter_context(_KnownTensorData(self.known))
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        assert self._stack is not None
        self._stack.close()
        self._stack = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Real tensors for a moment (e.g. to build a tokenizer), the fake GPU back afterwards."""
        with _disable_current_modes():
            yield

    def build(self, construct: Callable[[], torch.nn.Module], dtype: torch.dtype) -> torch.nn.Module:
        """`construct()` on the meta device (no init cost), then every parameter, buffer and tensor attribute
        as a fake tensor on the fake GPU: floating parameters in `dtype`, the others in their own dtype."""
        with self.paused(), torch.device("meta"):
            model = construct()
        with self.mode:
            for module in model.modules():
                for name, param in list(module._parameters.items()):
                    if param is not None:
                        kind = dtype if param.is_floating_point() else param.dtype
                        module._parameters[name] = torch.nn.Parameter(
                            torch.empty(param.shape, dtype=kind, device=self.device),
                            requires_grad=param.requires_grad)
                for name, buffer in list(module._buffers.items()):
                    if buffer is not None:
                        module._buffers[name] = torch.empty(buffer.shape, dtype=buffer.dtype, device=self.device)
                for name, value in list(vars(module).items()):  # tensors kept as plain attributes (rope tables)
                    if isinstance(value, torch.Tensor) and value.device.type == "meta":
                        setattr(module, name, torch.empty(value.shape, dtype=value.dtype, device=self.device))
        return model


def _count_cpu_attention_flops() -> None:
    """torch's FLOP counter knows the GPU attention kernels but not the CPU one, so every attention FLOP of
    a CPU run went uncounted (1.15e14 instead of 1.7e14 for a 1024x1024 edit step). Same formulas."""
    from torch.utils.flop_counter import flop_registry

    flop_registry[aten._scaled_dot_product_flash_attention_for_cpu] = \
        flop_registry[aten._scaled_dot_product_flash_attention]
    flop_registry[aten._scaled_dot_product_flash_attention_for_cpu_backward] = \
        flop_registry[aten._scaled_dot_product_flash_attention_backward]


_count_cpu_attention_flops()
