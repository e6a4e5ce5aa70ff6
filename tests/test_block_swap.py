"""Block swap: training with N blocks' frozen weights kept in CPU memory gives the losses of training without it, the
weights really leave between uses (a read of a resting weight is caught: tests make resting weights NaN), and the
side-stream prefetch is exercised on the CPU by standing in for CUDA's stream API."""

import contextlib
import math

import pytest
import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

import editforge
from editforge.errors import EditForgeError
from editforge.models import block_swap
from editforge.train.config import validate
from tests.helpers import noise_image, train_tiny_transformer

STEPS = 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def unswapped():
    return train_tiny_transformer(STEPS)[2]


def poison(cpu: torch.Tensor) -> torch.Tensor:
    """NaN in every floating part: a plain weight, or a quantized one's scales (and fp8 data)."""
    if is_traceable_wrapper_subclass(cpu):
        names, context = cpu.__tensor_flatten__()
        return type(cpu).__tensor_unflatten__({n: poison(getattr(cpu, n)) for n in names}, context, cpu.size(),
                                              cpu.stride())
    return torch.full_like(cpu, math.nan) if cpu.is_floating_point() else cpu


@pytest.fixture
def poisoned(monkeypatch):
    """A swapped block's weights between uses are NaN: any computation that reads one shows in the loss or grads."""
    monkeypatch.setattr(block_swap, "resting", poison)


def test_swapped_training_gives_the_same_losses_and_the_weights_really_move(unswapped, poisoned):
    uses = []

    def watch(transformer, params):
        layer = transformer.transformer_blocks[1].attn.to_q
        # in use: a real copy, not the resting (NaN) tensor
        layer.register_forward_pre_hook(lambda module, args: uses.append(torch.isfinite(layer.weight).all().item()))

    transformer, params, losses = train_tiny_transformer(STEPS, blocks_to_swap=1, device="cpu", on_prepared=watch)
    assert losses == unswapped  # bit for bit: each use computes with an exact copy
    # between uses the weight is the resting one (on a GPU: the pinned CPU copy)
    assert torch.isnan(transformer.transformer_blocks[1].attn.to_q.weight).all()
    # each step uses block 1 twice: the forward pass and the recomputation in the backward pass; both see real weights
    assert uses == [True] * (2 * STEPS)
    assert all(torch.isfinite(p).all() and p.requires_grad for p in params)  # the LoRA stays, and learns
    block0 = transformer.transformer_blocks[0].attn.to_q.base_layer.weight
    assert torch.isfinite(block0).all()  # block 0 is not swapped


@pytest.mark.parametrize("base", ["int8", "fp8"])
def test_a_quantized_base_swaps_part_by_part_and_trains_as_without_swapping(base, poisoned):
    """optimum-quanto's int8 and torchao's fp8 weights travel as their parts (data and scales, each pinnable); a
    use computes with an exact copy (the resting scales are NaN), so the losses are the unswapped ones."""
    unswapped = train_tiny_transformer(STEPS, quantize=base)[2]
    seen = []

    def watch(transformer, params):
        layer = transformer.transformer_blocks[1].attn.to_q.base_layer
        layer.register_forward_pre_hook(lambda module, args: seen.append(
            (type(layer.weight).__name__, torch.isfinite(layer.weight.dequantize()).all().item())))

    transformer, _, losses = train_tiny_transformer(STEPS, quantize=base, blocks_to_swap=1, device="cpu",
                                                    on_prepared=watch)
    assert losses == unswapped and all(math.isfinite(x) for x in losses)
    kind = {"int8": "WeightQBytesTensor", "fp8": "Float8Tensor"}[base]
    assert seen == [(kind, True)] * (2 * STEPS)  # still quantized in use, and a real copy
    resting = transformer.transformer_blocks[1].attn.to_q.base_layer.weight
    assert type(resting).__name__ == kind and torch.isnan(resting.dequantize()).all()


def test_a_quantized_generation_with_swapped_blocks_makes_the_same_picture():
    import numpy as np

    def picture(**swap):
        pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", quantize="int8", **swap)
        return np.asarray(editforge.edit(pipe, noise_image(), "make it red", seed=0, steps=2))

    assert np.array_equal(picture(blocks_to_swap=2), picture())
    with pytest.raises(EditForgeError, match="does not combine with `offload`"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", blocks_to_swap=1, offload="model")


def test_block_swap_quantizes_on_the_cpu_in_the_recipe_of_the_training_gpu(monkeypatch):
    """The transformer waits on the CPU while block swap sets up, but the fp8 recipe is the GPU's (fp8 matmuls on
    Hopper), not the CPU's (weights only). GPU-only branch, forced: capability 9.0 and torchao's hardware check."""
    from types import SimpleNamespace

    import torchao.quantization.quant_api as quant_api

    from editforge.benchmark.train import tiny_transformer
    from editforge.models import loading
    from editforge.models.registry import FAMILIES
    from editforge.train.config import LoraConfig
    from editforge.train.step import prepare_model

    monkeypatch.setattr(loading, "cuda_capability", lambda device: (9, 0) if str(device).startswith("cuda") else None)
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    monkeypatch.setattr(block_swap, "BlockSwap", lambda transformer, count, device: None)  # no CUDA to swap to
    transformer = tiny_transformer(FAMILIES["qwen-image-edit-2509"], torch.bfloat16)
    prepare_model(SimpleNamespace(transformer=transformer), LoraConfig(rank=4, alpha=4), quantize="fp8",
                  gradient_checkpointing=True, blocks_to_swap=1, device="cuda:0")
    assert transformer.transformer_blocks[0].attn.to_q.base_layer.weight.act_quant_kwargs is not None


def test_a_gguf_weight_is_refused_by_name():
    from diffusers.quantizers.gguf.utils import GGUFParameter
    from gguf import GGMLQuantizationType

    gguf = GGUFParameter(torch.zeros(4, 34, dtype=torch.uint8), quant_type=GGMLQuantizationType.Q8_0)
    assert block_swap.movable(torch.nn.Linear(4, 4).weight) and not block_swap.movable(gguf)


def test_without_gradient_checkpointing_swapping_is_right_but_saves_nothing_so_a_run_refuses_it(unswapped, poisoned):
    """Each use has its own copies, so autograd keeps the right ones; but it keeps every block's until the backward
    pass: the memory of no swap."""
    assert train_tiny_transformer(STEPS, blocks_to_swap=1, device="cpu", gradient_checkpointing=False)[2] == unswapped
    with pytest.raises(EditForgeError, match="blocks_to_swap needs gradient_checkpointing"):
        validate({"model": "x", "output_dir": "o", "data": {"samples": [{"instruction": "i"}]},
                  "train": {"blocks_to_swap": 1, "gradient_checkpointing": False}})


def test_diffusers_group_offload_reads_offloaded_weights_in_the_backward_pass(unswapped, monkeypatch):
    """Why block_swap does not use diffusers' block-level group offloading: it swaps `param.data` in place, and
    checkpointing keeps frozen parameters as they are, so once the recomputation runs the block to its end (which
    swapping needs, to send the weights back) the backward pass reads the offloaded ones (NaN here)."""
    from diffusers.hooks import group_offloading

    resting = {}

    def offload(self):
        for module in self.modules:
            for p in module.parameters():
                if not p.requires_grad:
                    resting[p] = p.data
                    p.data = torch.full_like(p.data, math.nan)

    def onload(self):
        for module in self.modules:
            for p in module.parameters():
                if p in resting:
                    p.data = resting.pop(p)

    monkeypatch.setattr(group_offloading.ModuleGroup, "offload_", offload)
    monkeypatch.setattr(group_offloading.ModuleGroup, "onload_", onload)

    def enable(transformer, params):
        transformer.enable_gradient_checkpointing(block_swap.recompute_whole_block)
        transformer.enable_group_offload(torch.device("cpu"), torch.device("cpu"), offload_type="block_level",
                                         num_blocks_per_group=1)
        lora.extend(params)

    lora = []
    _, _, losses = train_tiny_transformer(STEPS, on_prepared=enable)
    assert math.isfinite(losses[0]) and math.isnan(losses[1])  # the first backward spread NaN into the LoRA
    assert any(torch.isnan(p).any() for p in lora)


class FakeStream:
    """CUDA's stream API as block_swap uses it, recording what happens in which order."""

    def __init__(self, log):
        self.log = log

    def wait_stream(self, other):
        self.log.append("side waits for compute")

    def wait_event(self, event):
        self.log.append(f"compute waits for {event.name}")


def test_the_next_block_is_copied_on_the_side_stream_before_it_is_used(unswapped, monkeypatch, poisoned):
    log, current = [], ["compute"]
    compute = FakeStream(log)

    @contextlib.contextmanager
    def on_stream(stream):
        current.append("side")
        yield
        current.pop()

    class Event:
        count = 0

        def __init__(self):
            Event.count += 1
            self.name = f"event {Event.count}"

        def record(self, stream):
            log.append(f"{self.name} recorded")

    copies = block_swap.BlockSwap._copies

    def logged_copies(self, i):
        log.append(f"copy block {i} on {current[-1]}")
        return copies(self, i)

    monkeypatch.setattr(torch.cuda, "stream", on_stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: compute)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None)
    monkeypatch.setattr(block_swap.BlockSwap, "_copies", logged_copies)

    original_init = block_swap.BlockSwap.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.stream = FakeStream(log)  # as on a GPU

    monkeypatch.setattr(block_swap.BlockSwap, "__init__", init)
    losses = train_tiny_transformer(STEPS, blocks_to_swap=2, device="cpu")[2]
    assert losses == unswapped
    # one step: forward 0 (copied in order), 1 prefetched on the side stream while 0 runs; the backward pass's
    # recomputation runs 1 (copied in order), prefetches 0
    step = ["copy block 0 on compute", "side waits for compute", "copy block 1 on side", "event 1 recorded",
            "compute waits for event 1",
            "copy block 1 on compute", "side waits for compute", "copy block 0 on side", "event 2 recorded",
            "compute waits for event 2"]
    assert log[:len(step)] == step, log[:12]
    assert len(log) == STEPS * len(step)


def test_generation_with_swapped_blocks_makes_the_same_picture(tiny_edit_plus, poisoned):
    import numpy as np

    plain = np.asarray(editforge.edit(tiny_edit_plus, noise_image(), "make it red", seed=0, steps=2))
    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", blocks_to_swap=2)
    assert torch.isnan(pipe.transformer.transformer_blocks[0].attn.to_q.weight).all()  # resting between uses
    assert np.array_equal(np.asarray(editforge.edit(pipe, noise_image(), "make it red", seed=0, steps=2)), plain)
    with pytest.raises(EditForgeError, match="`blocks_to_swap` must be between 1 and the model's 2 blocks, not 3"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", blocks_to_swap=3)


def test_a_training_run_with_train_blocks_to_swap_gives_the_losses_of_one_without(tmp_path, poisoned, monkeypatch):
    from editforge.train import train
    from tests.helpers import write_samples

    samples = write_samples(tmp_path / "data")
    onloads = []
    onload = block_swap.BlockSwap.onload
    monkeypatch.setattr(block_swap.BlockSwap, "onload", lambda self, i: onloads.append(i) or onload(self, i))

    def run(name, blocks_to_swap):
        return train(validate({
            "model": "tiny-qwen-image-edit-2509", "output_dir": str(tmp_path / name), "seed": 0,
            "data": {"samples": samples, "max_pixels": 64 * 64, "condition_pixels": 56 * 56,
                     "cache_dir": str(tmp_path / "cache")},
            "validation": {"samples": [samples[0]], "every": 2, "steps": 2},
            "lora": {"rank": 4, "alpha": 4},
            "train": {"steps": 2, "learning_rate": 1e-3, "mixed_precision": "no", "blocks_to_swap": blocks_to_swap},
        })).losses

    assert run("swapped", 2) == run("plain", 0)
    # the swapped run: 2 steps x (forward + recomputation) x 2 blocks, and 2 denoising steps x 2 (true CFG) x 2 blocks
    # for the preview
    assert len(onloads) == 2 * 2 * 2 + 2 * 2 * 2
