"""Block swap: the frozen weights of N transformer blocks live in (pinned) CPU memory and are copied to the GPU
just before each use, the next block's on a side stream while the current one computes. Trainable weights (the
LoRA) stay on the GPU, with their optimizer states. A quantized base (optimum-quanto int8, torchao fp8) swaps too:
its weights travel as their plain parts (data and scales), each pinned; GGUF weights do not (they are refused).

A use is every call of the block: the forward pass, and in training the forward that gradient checkpointing
recomputes during the backward pass. Each use gets its own device copy of every frozen weight, installed in the
block for the call (a Parameter object of its own) and replaced by the resting CPU one after it. Autograd keeps
what the backward pass needs, the copy, and frees it when that is done. (Swapping `param.data` in place instead,
as diffusers' group offloading does, would let the backward pass read the parameter after it went back to the CPU:
checkpointing saves frozen tensors as they are, not detached.) The recomputation must run the block to its end
(`recompute_whole_block`): by default it stops as soon as it has what the backward needs, the block's forward never
returns, and its copies would stay installed. Without checkpointing autograd keeps every block's copies until the
backward pass, so swapping saves nothing: training asks for checkpointing.

Why not diffusers' `enable_group_offload(offload_type="block_level", use_stream=True)`: it moves every parameter
of a block, the LoRA's too. With streams each onload copies a pinned snapshot taken when offloading was enabled,
so the optimizer's updates to the LoRA inside swapped blocks would be overwritten at the next forward (and LoRA
layers added after enabling it are not in the snapshot); without streams the LoRA weights travel to the CPU, away
from their gradients and optimizer states (diffusers 0.42.1, hooks/group_offloading.py: read, not run, it needs a
GPU). And it swaps `param.data` in place (see above): tests/test_block_swap.py shows its backward pass reading the
offloaded weights once the recomputation runs to the end.
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import is_fake
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from editforge.errors import EditForgeError


class BlockSwap:
    """Installed by `swap_blocks`, for the life of the transformer."""

    def __init__(self, transformer: torch.nn.Module, count: int, device: str | torch.device):
        blocks = list(transformer.transformer_blocks)
        if not 0 < count <= len(blocks):
            raise EditForgeError(f"`blocks_to_swap` must be between 1 and the model's {len(blocks)} blocks, not {count}")
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda:
            exact_pinned_sizes()
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        # per swapped block (the last ones: the first blocks run while the others arrive), its frozen weights:
        # (module, attribute, the resting Parameter, its CPU copy)
        self.weights = []
        for block in blocks[len(blocks) - count:]:
            entries = []
            for module in block.modules():
                for name, param in module._parameters.items():
                    if param is None or param.requires_grad:  # the LoRA stays on the device
                        continue
                    if not movable(param):
                        raise EditForgeError("`blocks_to_swap` swaps plain and quanto/torchao-quantized weights, not "
                                             f"{type(param).__name__} ones (a GGUF transformer)")
                    cpu = moved(param.detach(), "cpu", pin=cuda)
                    # a Parameter of its own rests in the block; the device one is dropped (its memory freed)
                    rest = torch.nn.Parameter(resting(cpu), requires_grad=False)
                    module._parameters[name] = rest
                    entries.append((module, name, rest, cpu))
            self.weights.append(entries)
        # Everything else goes to the device (a transformer built on the CPU never holds all its weights there).
        swapped = {id(rest) for entries in self.weights for _, _, rest, _ in entries}
        # New Parameters on the device (the caller collects the LoRA's again): `param.data =` would move only a
        # quantized weight's wrapper, not its data and scales
        for module in transformer.modules():
            for name, param in module._parameters.items():
                if param is not None and id(param) not in swapped and param.device != self.device:
                    module._parameters[name] = torch.nn.Parameter(moved(param.detach(), self.device),
                                                                  requires_grad=param.requires_grad)
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = buffer.to(self.device)
        self.copied_bytes = 0  # host -> device, since the swap was installed (the plan reads it per step)
        # copies made ahead of use: block index -> (copies, the event their copy recorded on the side stream)
        self.ahead: dict[int, tuple[list, torch.cuda.Event | None]] = {}
        self.handles = []
        for i, block in enumerate(blocks[len(blocks) - count:]):
            self.handles.append(block.register_forward_pre_hook(lambda module, args, i=i: self.onload(i)))
            self.handles.append(block.register_forward_hook(lambda module, args, output, i=i: self.offload(i)))

    def onload(self, i: int) -> None:
        if i in self.ahead:
            copies, event = self.ahead.pop(i)
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
        else:  # not prefetched (the first swapped block of a pass): copy now, in order
            copies = self._copies(i)
        for (module, name, _, _), copy in zip(self.weights[i], copies):
            module._parameters[name] = copy
        # the next block this pass will use: the following one going forward, the previous one in the backward
        # pass's recomputation, which runs the blocks in reverse
        following = i - 1 if torch._C._current_graph_task_id() != -1 else i + 1
        if 0 <= following < len(self.weights) and following not in self.ahead:
            self.ahead[following] = self._prefetch(following)

    def offload(self, i: int) -> None:
        for module, name, param, _ in self.weights[i]:
            module._parameters[name] = param

    @property
    def pinned_bytes(self) -> int:
        """The CPU memory the swapped weights rest in (pinned on a GPU machine)."""
        return sum(nbytes(cpu) for entries in self.weights for _, _, _, cpu in entries)

    def _copies(self, i: int) -> list[torch.nn.Parameter]:
        # a real copy even when the device is the CPU (tests), so a weight in use is never the resting one
        copies = [torch.nn.Parameter(moved(cpu, self.device), requires_grad=False) for _, _, _, cpu in self.weights[i]]
        self.copied_bytes += sum(nbytes(copy) for copy in copies)
        return copies

    def _prefetch(self, i: int):
        if self.stream is None:
            return self._copies(i), None
        compute = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(compute)
        with torch.cuda.stream(self.stream):
            copies = self._copies(i)
            for part in (part for copy in copies for part in plain_parts(copy)):
                part.record_stream(compute)  # allocated on the side stream, freed only after compute used it
            event = torch.cuda.Event()
            event.record(self.stream)
        return copies, event


def recompute_whole_block(block, *args):
    """Gradient checkpointing (as diffusers' default, non-reentrant) whose recomputation runs `block` to the end, so
    the hook after its forward sends the weights back (the default stops early, inside the block)."""
    from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

    with set_checkpoint_early_stop(False):
        return checkpoint(block.__call__, *args, use_reentrant=False)


def movable(tensor: torch.Tensor) -> bool:
    """Plain tensors, and the quantized ones that torch.compile can take apart (optimum-quanto's int8, torchao's
    fp8): their parts are plain tensors. GGUF parameters keep their quantization type in an attribute instead."""
    return type(tensor) in (torch.Tensor, torch.nn.Parameter) or is_fake(tensor) or is_traceable_wrapper_subclass(tensor)


def moved(tensor: torch.Tensor, device: str | torch.device, *, pin: bool = False) -> torch.Tensor:
    """A copy of `tensor` on `device`, copied without blocking the host (pinned, on the CPU side, with `pin`). A
    quantized tensor goes part by part (its data and scales), through the flatten protocol torch.compile uses:
    each part is a plain tensor that can be pinned, which the quantized wrapper itself cannot."""
    if is_traceable_wrapper_subclass(tensor):
        names, context = tensor.__tensor_flatten__()
        parts = {name: moved(getattr(tensor, name), device, pin=pin) for name in names}
        return type(tensor).__tensor_unflatten__(parts, context, tensor.size(), tensor.stride())
    if pin:  # pin_memory copies: one copy, not two, of a tensor already on the CPU
        return tensor.to(device).pin_memory()
    return tensor.to(device, non_blocking=True, copy=True)


def exact_pinned_sizes() -> None:
    """torch's pinned-memory cache rounds every allocation up to a power of two (a 72 MiB MLP weight takes 128 MiB):
    ~1 GiB of host memory per 0.63 GiB block. Swapped weights are pinned once and kept, so rounding buys no reuse;
    pinned blocks of their exact size. (torch.cuda._set_allocator_settings' deprecation names this call.)"""
    torch._C._accelerator_setAllocatorSettings("pinned_max_round_threshold_mb:0")


def plain_parts(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors a (quantized) tensor is made of: itself if it is one."""
    if not is_traceable_wrapper_subclass(tensor):
        return [tensor]
    return [part for name in tensor.__tensor_flatten__()[0] for part in plain_parts(getattr(tensor, name))]


def nbytes(tensor: torch.Tensor) -> int:
    """Bytes of a tensor's storage, a quantized tensor's parts together (fake tensors included)."""
    return sum(part.untyped_storage().nbytes() for part in plain_parts(tensor))


def resting(cpu: torch.Tensor) -> torch.Tensor:
    """What a swapped block's weight is between uses: its CPU copy (tests make it poison to catch a stray read)."""
    return cpu


def swap_blocks(transformer: torch.nn.Module, count: int, device: str | torch.device) -> BlockSwap:
    """Keep the frozen weights of the transformer's last `count` blocks on the CPU, copied in for each use; the
    rest goes to `device` as new Parameter objects (collect trainable ones after this). The swap stays reachable
    as `installed(transformer)` (its byte counts)."""
    swap = BlockSwap(transformer, count, device)
    transformer.__dict__[ATTRIBUTE] = swap  # not a submodule, not a parameter: out of nn.Module's bookkeeping
    return swap


ATTRIBUTE = "_editforge_block_swap"


def installed(transformer: torch.nn.Module) -> BlockSwap | None:
    return transformer.__dict__.get(ATTRIBUTE)
