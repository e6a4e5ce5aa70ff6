"""A fake GPU: EditForge's own code on full-size models, with shapes, dtypes, FLOPs and memory but no data.

    with FakeGPU() as gpu:
        transformer = gpu.build(lambda: QwenImageTransformer2DModel(**config), torch.bfloat16)
        with gpu.syncs.region("denoise"):
            ...                                   # any EditForge code: pipelines, training steps
    gpu.syncs.events                              # what would have stalled the GPU, and where

Built on PyTorch's `FakeTensorMode`: every tensor has a shape, dtype and device ("cuda", although this
machine has no GPU) and no storage, so a 20B-parameter transformer costs nothing. Three things are added,
each for a reason found by running the real pipelines through it:

- **Known values.** Small tensors whose values are known (token ids, attention masks, image grids,
  scheduler sigmas, position ids) are computed for real beside their fake twin. The vision tower and
  mRoPE need them: `repeat_interleave`, `.tolist()` and `torch.tensor([...])` on those values decide
  shapes. Anything derived from weights stays fake: nothing the model computes is ever "known".
- **Fused attention as the GPU runs it.** PyTorch's SDPA picks a kernel by device; on this CPU-only
  build a "cuda" tensor would take the math path, which materialises the attention matrix (GBs the GPU
  never allocates) and reports its FLOPs as plain `bmm`. Calls are routed to the fused CUDA operators
  (`_scaled_dot_product_flash_attention`, or `_efficient_attention` when a mask is given), whose meta
  kernels give the memory of the real kernels, and whose FLOPs torch's counter knows.
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
KNOWN_NUMEL = 1 << 16  # tensors up to this size may carry known values (ids, masks, grids, sigmas)
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
_OUR_CODE = (str(Path(__file__).parent),)
_LIBRARY_FRAGMENTS = ("/torch/", "/contextlib.py", "/functools.py")


@dataclass(frozen=True)
class SyncEvent:
    region: str
    kind: str    # item, nonzero, ..., device-to-host copy, torch.tensor(...)
    where: str   # file:line of the code that asked for it, outside torch


@dataclass
class SyncLog:
    """Host syncs, grouped by the region (a name the caller gives) they happened in."""

    events: list[SyncEvent] = field(default_factory=list)
    _regions: list[str] = field(default_factory=lambda: ["(outside)"])

    @contextlib.contextmanager
    def region(self, name: str) -> Iterator[None]:
        self._regions.append(name)
        try:
            yield
        finally:
            self._regions.pop()

    def record(self, kind: str) -> None:
        self.events.append(SyncEvent(self._regions[-1], kind, _caller()))

    def count(self, region: str) -> int:
        return sum(e.region == region for e in self.events)

    def summary(self, region: str) -> list[dict]:
        """The syncs of `region` as [{"kind", "where", "count"}], most frequent first."""
        counts = Counter((e.kind, e.where) for e in self.events if e.region == region)
        return [{"kind": kind, "where": where, "count": n} for (kind, where), n in counts.most_common()]


def _caller() -> str:
    """The innermost frame outside torch and this module: the line that asked for the value."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename.replace("\\", "/")
        if name.startswith(_OUR_CODE) or any(part in name for part in _LIBRARY_FRAGMENTS):
            continue
        marker = "site-packages/"
        short = name.split(marker, 1)[1] if marker in name else name.rsplit("/src/", 1)[-1]
        return f"{short}:{frame.lineno}"
    return "?"


def tensors_device(args, kwargs) -> torch.device:
    """The device an op runs on: its first tensor argument's, or its `device` argument."""
    for x in tree_flatten((args, kwargs))[0]:
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device(kwargs.get("device") or "cpu")


def _on_gpu(tensors) -> bool:
    return any(t.device.type == "cuda" for t in tensors)


class _KnownValues(TorchDispatchMode):
    """Computes ops on small known-valued tensors for real, and logs host syncs. Sits above FakeTensorMode."""

    def __init__(self, fake_mode: FakeTensorMode, syncs: SyncLog, device: str):
        super().__init__()
        self.fake_mode, self.fake_mode_device = fake_mode, device
        self.syncs = syncs
        self.values: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def value(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """The real value behind `tensor` (itself if it is real), or None if it is unknown."""
        if isinstance(tensor, FakeTensor):
            return self.values.get(tensor)
        return tensor

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        self._log_sync(func, args, kwargs, tensors)
        if all(t.numel() <= KNOWN_NUMEL and self.value(t) is not None for t in tensors):
            real = self._run_for_real(func, args, kwargs)
            if real is not NotImplemented:
                return real
        self._forget_mutated(func, args)
        # real inputs (pixels from the processor, ...) join the fake world; the fake mode then answers
        args, kwargs = tree_map(self._fake, (args, kwargs))
        return func(*args, **kwargs)

    def _fake(self, x):
        if not isinstance(x, torch.Tensor) or isinstance(x, FakeTensor):
            return x
        fake = self.fake_mode.from_tensor(x)
        if x.numel() <= KNOWN_NUMEL:
            self.values[fake] = x
        return fake

    def _forget_mutated(self, func, args) -> None:
        """A known tensor written by an op with unknown inputs is no longer known."""
        for argument, value in zip(func._schema.arguments, args):
            if argument.alias_info is not None and argument.alias_info.is_write and isinstance(value, FakeTensor):
                self.values.pop(value, None)

    def on_gpu(self, tensors) -> bool:
        """Whether a GPU would hold one of `tensors`: on the fake "cuda" device, the ones there. On the fake
        "cpu" device (training: torch's autograd engine wants a real CUDA runtime for "cuda" tensors), every
        fake tensor whose value is unknown: a training step keeps the model's tensors on the GPU, while
        known values there are host bookkeeping (the optimizer's step counters)."""
        if self.fake_mode_device == "cpu":
            return any(isinstance(t, FakeTensor) and t not in self.values for t in tensors)
        return _on_gpu(tensors)

    def _log_sync(self, func, args, kwargs, tensors) -> None:
        if func in SYNC_OPS and self.on_gpu(tensors):
            self.syncs.record(SYNC_OPS[func])
        elif func in (aten._to_copy.default, aten.copy_.default) and tensors:
            source = tensors[-1] if func is aten.copy_.default else tensors[0]
            target = kwargs.get("device") if func is aten._to_copy.default else tensors[0].device
            target = torch.device(target) if target is not None else source.device
            if source.device.type == "cuda" and target.type == "cpu":
                self.syncs.record("device-to-host copy")

    def _run_for_real(self, func, args, kwargs):
        real_args, real_kwargs = tree_map(lambda x: self._real(x), (args, kwargs))
        real_kwargs = _cpu_device(real_kwargs)
        try:
            with unset_fake_temporarily():
                out = func(*real_args, **real_kwargs)
        except (RuntimeError, NotImplementedError, TypeError):
            return NotImplemented  # e.g. an op that insists on the fake device: let the fake mode answer
        outs, _ = tree_flatten(out)
        if not any(isinstance(o, torch.Tensor) for o in outs):
            return out  # a Python value (.item(), .tolist(), equal): the host has it now
        if any(isinstance(o, torch.Tensor) and o.numel() > KNOWN_NUMEL for o in outs):
            return NotImplemented  # a big result (a factory like torch.zeros(8192, 3072)): fake is enough
        try:
            fake_out = func(*args, **kwargs)  # the fake twin: device, dtype and strides as the fake mode says
        except (DynamicOutputShapeException, DataDependentOutputException):
            fake_out = tree_map(lambda o: self._twin(o, tensors_device(args, kwargs)), out)  # shape from the value
        reals, _ = tree_flatten(out)
        fakes, _ = tree_flatten(fake_out)
        for fake, value in zip(fakes, reals):
            if isinstance(fake, FakeTensor) and isinstance(value, torch.Tensor):
                self.values[fake] = value
        return fake_out

    def _twin(self, value, device: torch.device):
        if not isinstance(value, torch.Tensor):
            return value
        fake = self.fake_mode.from_tensor(value)
        return fake if device.type == "cpu" else aten._to_copy.default(fake, device=device)

    def _real(self, x):
        if not isinstance(x, torch.Tensor):
            return x
        if isinstance(x, FakeTensor):
            return self.values[x]
        return x

    def python_value(self, tensor: torch.Tensor):
        value = self.value(tensor)
        if value is None:
            raise RuntimeError("the value of a fake tensor derived from model weights was asked for")
        return value.tolist()


def _cpu_device(kwargs: dict) -> dict:
    """Known values are computed on the CPU, wherever the fake twin lives."""
    return {k: (torch.device("cpu") if k == "device" and v is not None else v) for k, v in kwargs.items()}


def _count_cpu_attention_flops() -> None:
    """torch's FLOP counter knows the GPU attention kernels but not the CPU one: every attention FLOP of a
    CPU run went uncounted (1.15e14 instead of 1.7e14 for a 1024x1024 edit step). Same formulas."""
    from torch.utils.flop_counter import flop_registry

    flop_registry[aten._scaled_dot_product_flash_attention_for_cpu] = \
        flop_registry[aten._scaled_dot_product_flash_attention]
    flop_registry[aten._scaled_dot_product_flash_attention_for_cpu_backward] = \
        flop_registry[aten._scaled_dot_product_flash_attention_backward]


_count_cpu_attention_flops()


class _FunctionRouting(TorchFunctionMode):
    """`F.scaled_dot_product_attention` on the fake "cuda" device -> the fused CUDA kernels (the fake "cpu"
    device takes torch's own fused CPU kernel); `torch.tensor([known...])` -> its values."""

    def __init__(self, known: _KnownValues, syncs: SyncLog):
        super().__init__()
        self.known, self.syncs = known, syncs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and (args or [kwargs["query"]])[0].device.type == "cuda":
            return fused_attention(*args, **kwargs)
        if func is torch.tensor and args and _holds_fake(args[0]):
            if self.known.on_gpu([t for t in tree_flatten(args[0])[0] if isinstance(t, torch.Tensor)]):
                self.syncs.record("torch.tensor(gpu values)")
            data = tree_map(lambda x: self.known.python_value(x) if isinstance(x, FakeTensor) else x, args[0])
            return func(data, *args[1:], **kwargs)
        if func in _MOVES and args and isinstance(args[0], torch.Tensor):
            return _move(self.known._fake(args[0]), func, args[1:], kwargs)
        name = getattr(func, "__name__", None)
        if name in _INDEXING and args[0].device.type != "cpu":
            # Indexing a GPU tensor: C++ takes a CUDA device guard first, which this CPU-only build lacks.
            # Do what C++ does, in Python: basic indexing as views, then one aten.index(_put) for tensors.
            value = args[2] if name == "__setitem__" else None
            return _index(args[0], args[1], value, self.known, self.syncs)
        return func(*args, **kwargs)


_MOVES = (torch.Tensor.to, torch.Tensor.cuda)
_INDEXING = ("__getitem__", "__setitem__")


def _index(x: torch.Tensor, index, value, known: "_KnownValues", syncs: SyncLog):
    """`x[index]` (value None) or `x[index] = value` for an index holding tensors, as torch's C++ does it:
    ints, slices, None and ... first (a view), then the tensors, in their dimensions, in one aten op."""
    index = index if isinstance(index, tuple) else (index,)
    expanded = []
    for item in index:  # boolean masks select by their nonzero positions: that is a host sync on a GPU
        if isinstance(item, torch.Tensor) and item.dtype == torch.bool:
            if known.on_gpu([item]):
                syncs.record("boolean mask index")
            expanded += list(_move(known._fake(item), torch.Tensor.to, ("cpu",), {}).nonzero().unbind(1))
        else:
            expanded.append(item)
    used = sum(1 for i in expanded if i is not None and i is not Ellipsis)
    view, dim, tensors = x, 0, []
    for item in expanded:
        if item is Ellipsis:
            skip = x.dim() - used
            tensors += [None] * skip
            dim += skip
        elif item is None:
            view = aten.unsqueeze.default(view, dim)
            tensors.append(None)
            dim += 1
        elif isinstance(item, (int, torch.SymInt)) and not isinstance(item, bool):
            view = aten.select.int(view, dim, item)
        elif isinstance(item, slice):
            start, stop, step = item.indices(view.shape[dim])
            view = aten.slice.Tensor(view, dim, start, stop, step)
            tensors.append(None)
            dim += 1
        else:
            tensors.append(_move(known._fake(item), torch.Tensor.to, (x.device,), {}))
            dim += 1
    while tensors and tensors[-1] is None:
        tensors.pop()
    if value is None:
        return aten.index.Tensor(view, tensors) if tensors else view
    if not isinstance(value, torch.Tensor):
        value = torch.full((), value, dtype=x.dtype, device=x.device)
    value = _move(known._fake(value), torch.Tensor.to, (x.device,), {})
    if tensors:
        aten.index_put_.default(view, tensors, value)
    else:
        aten.copy_.default(view, value.expand(view.shape) if value.dim() <= view.dim() else value)
    return None


def _move(tensor: torch.Tensor, func, args, kwargs) -> torch.Tensor:
    """`tensor.to(...)` / `.cuda()` as the dispatcher op: the C++ method looks for a real CUDA first."""
    if func is torch.Tensor.cuda:
        device, dtype, non_blocking = torch.device("cuda"), None, bool(kwargs.get("non_blocking", False))
    else:
        device, dtype, non_blocking, _, = torch._C._nn._parse_to(*args, **kwargs)
    device = torch.device("cuda", 0) if device is not None and device.type == "cuda" else device
    if (device is None or device == tensor.device) and (dtype is None or dtype == tensor.dtype) \
            and not kwargs.get("copy", False):
        return tensor
    return aten._to_copy.default(tensor, dtype=dtype or tensor.dtype, device=device or tensor.device,
                                 non_blocking=non_blocking)


def _holds_fake(data) -> bool:
    return any(isinstance(x, FakeTensor) for x in tree_flatten(data)[0])


def fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    """What SDPA runs on a GPU: flash attention without a mask, memory-efficient attention with one."""
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


def _apply_replacing(original):
    """`Module._apply` that swaps fake parameters by replacing them (torch's swap refuses them)."""

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

    def __init__(self, device: str = "cuda"):
        if device not in ("cuda", "cpu"):
            raise ValueError(f"the fake GPU is 'cuda' or 'cpu', not {device}")
        self.device = torch.device(device)
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.syncs = SyncLog()
        self.known = _KnownValues(self.mode, self.syncs, device)
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "FakeGPU":
        stack = contextlib.ExitStack()
        original = torch.nn.Module._apply
        torch.nn.Module._apply = _apply_replacing(original)
        stack.callback(setattr, torch.nn.Module, "_apply", original)
        stack.enter_context(self.mode)
        stack.enter_context(self.known)
        stack.enter_context(_FunctionRouting(self.known, self.syncs))
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
