"""The measured stages of the full-size plan, each EditForge's own code on the fake GPU.

Generation: `editforge.generate` on a full-size pipeline, with its pipeline's entry points wrapped so FLOPs,
peak memory and host syncs fall to the stage that caused them:
    text_encode   pipe.encode_prompt: processor, Qwen2.5-VL, the template's dropped tokens
    vae_encode    pipe.vae.encode, every reference image (Edit)
    denoise_step  one transformer call and one scheduler step (Lightning: cfg 1, one call per step)
    vae_decode    pipe.vae.decode
Training: one optimizer step of `editforge train`'s own functions (`prepare_model`, `make_optimizer`,
`optimizer_step`) on batches `collate` builds from cache-shaped tensors.
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Callable, Iterator

import torch
from PIL import Image

from editforge.models.registry import FAMILIES
from editforge.plan import models
from editforge.plan.fake import FakeGPU
from editforge.plan.flops import FlopCount
from editforge.plan.memory import MemoryTracker

GENERATION_STAGES = ("text_encode", "vae_encode", "denoise_step", "vae_decode")
PROMPT = "Put the cat from picture 1 on the sofa of picture 2 and keep the lighting of the room."
LATENT_CHANNELS = 16
TEXT_DIM = 3584
INPUT_SIDE = 1024  # every reference a square 1024x1024 picture: the default 1 MP output


@dataclass
class Row:
    stage: str
    model: str
    size: int                 # the long side of the output (generation) or training target, in pixels
    references: int           # input images (generation) or control images (training)
    batch: int
    dtype: str                # base weights: bf16, int8 or fp8
    flops: int
    peak_bytes: int
    weights: int
    activations: int
    gradients: int
    optimizer: int
    host_syncs: int
    sync_sites: list[dict] = field(default_factory=list)
    calls: int = 1            # how many calls the numbers cover (vae_encode: one per reference)
    text_tokens: int | None = None
    image_tokens: int | None = None
    depth: int = 60           # transformer blocks actually run (see editforge.plan.depth)
    blocks_swapped: int = 0   # training: blocks whose frozen weights rest in CPU memory (editforge.models.block_swap)
    pinned_bytes: int = 0     # the CPU memory they rest in
    copied_bytes: int = 0     # bytes copied host -> device per step (each swapped block: forward and recompute)
    phases: dict[str, dict] = field(default_factory=dict)  # training: the peak of each phase, as the top level
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def deterministic_collection() -> Iterator[None]:
    """Garbage cycles collected before a measurement, not during it: a cycle that holds a tensor (one of ~5 MB
    exists in a training step) is otherwise freed whenever Python's collector happens to run, and the peak
    would depend on that."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _replaced(obj, name: str, wrap: Callable) -> Iterator[None]:
    original = getattr(obj, name)
    setattr(obj, name, wrap(original))
    try:
        yield
    finally:
        setattr(obj, name, original)


class _StageMeter:
    """Wraps entry points so that what they do is counted under a stage's name."""

    def __init__(self, gpu: FakeGPU, memory: MemoryTracker):
        self.gpu, self.memory = gpu, memory
        self.flops: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.outputs: dict[str, object] = {}

    def wrap(self, stage: str, *, counts: bool = True, sticky_region: bool = False) -> Callable:
        """A wrapper factory for `_replaced`. `counts`: a call is one unit of the stage (a denoising step is a
        transformer call and a scheduler step: only the latter counts). `sticky_region`: host syncs after the
        call (the pipeline's glue between steps) still count for this stage, until another stage starts."""
        def wrap(original):
            def measured(*args, **kwargs):
                counter = FlopCount()
                with counter, self.memory.stage(stage), self.gpu.syncs.region(stage):
                    out = original(*args, **kwargs)
                if sticky_region:
                    self.gpu.syncs.current = stage
                self.flops[stage] += counter.total
                self.calls[stage] += counts
                self.outputs.setdefault(stage, out)
                return out
            return measured
        return wrap


def generation_rows(family_name: str, reference_counts: list[int], *, quantize: str | None = None,
                    tiny: bool = False) -> list[Row]:
    """One row per stage and reference count for `family_name`, at its default size (1 MP; Qwen-Image
    1328x1328), the transformer's weights in bf16 or `quantize`d (int8, fp8) as `load_pipeline` does it.
    `tiny`: the tiny offline model's shapes and its default 64x64 size (for the tests)."""
    import editforge
    from editforge.models.loading import quantize_transformer

    family = FAMILIES[family_name]
    rows = []
    with FakeGPU() as gpu:
        pipe = models.pipeline(gpu, family, tiny=tiny)
        if quantize:
            quantize_transformer(pipe.transformer, quantize)
        components = [pipe.text_encoder, pipe.transformer, pipe.vae]
        for references in reference_counts:
            side = 64 if tiny else INPUT_SIDE
            images = [Image.new("RGB", (side, side), (128, 96, 64)) for _ in range(references)]
            with deterministic_collection(), MemoryTracker(*components, device=gpu.device) as memory, \
                    _measured_pipeline(pipe, gpu, memory) as meter:
                size = {"max_pixels": 64 * 64, "condition_pixels": 56 * 56} if tiny else {}
                _, params = editforge.generate(pipe, images, PROMPT, seed=0, steps=2, cfg=1.0, **size)
            rows += _stage_rows(meter, memory, gpu, family.name, params, references, quantize or "bf16")
            gpu.syncs.events.clear()
    return rows


@contextlib.contextmanager
def _measured_pipeline(pipe, gpu: FakeGPU, memory: MemoryTracker) -> Iterator[_StageMeter]:
    meter = _StageMeter(gpu, memory)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_replaced(pipe, "encode_prompt", meter.wrap("text_encode")))
        stack.enter_context(_replaced(pipe.vae, "encode", meter.wrap("vae_encode")))
        stack.enter_context(_replaced(pipe.transformer, "forward",
                                      meter.wrap("denoise_step", counts=False, sticky_region=True)))
        stack.enter_context(_replaced(pipe.scheduler, "step", meter.wrap("denoise_step", sticky_region=True)))
        stack.enter_context(_replaced(pipe.vae, "decode", meter.wrap("vae_decode")))
        # The decoded pixels go to PIL on the host; a fake tensor has no pixels to give.
        stack.enter_context(_replaced(pipe.image_processor, "postprocess", lambda _: _blank_images))
        yield meter


def _blank_images(image, output_type="pil", **_):
    return [Image.new("RGB", (image.shape[-1], image.shape[-2]))]


def _stage_rows(meter: _StageMeter, memory: MemoryTracker, gpu: FakeGPU, family: str, params: dict,
                references: int, dtype: str) -> list[Row]:
    """Per stage: FLOPs and syncs per unit (one denoising step, one text encoding, every reference's VAE
    encode together), and the stage's peak memory."""
    text_tokens = int(meter.outputs["text_encode"][0].shape[1])
    latent_tokens = (params["height"] // 16) * (params["width"] // 16)
    rows = []
    for stage in GENERATION_STAGES:
        calls = meter.calls[stage]
        if not calls:
            continue
        per = calls if stage == "denoise_step" else 1
        syncs = gpu.syncs.summary(stage)
        rows.append(Row(
            stage=stage, model=family, size=max(params["width"], params["height"]), references=references,
            batch=1, dtype=dtype, flops=meter.flops[stage] // per, **memory.peak(stage).as_dict(),
            host_syncs=sum(site["count"] for site in syncs) // per, sync_sites=syncs, calls=calls // per,
            text_tokens=text_tokens,
            image_tokens=latent_tokens * (1 + references) if stage == "denoise_step" else None,
        ))
    return rows


TRAIN_RANK = 32
FULL_DEPTH = 60
PHASES = ("forward", "backward", "optimizer")


def training_row(size: int, controls: int, batch: int, base: str, *, text_tokens: int,
                 depth: int = FULL_DEPTH, blocks_to_swap: int = 0, **transformer_config) -> Row:
    """One optimizer step of `editforge train` (LoRA rank 32, gradient checkpointing, bf16 mixed precision)
    on a `base` (bf16, int8 or fp8) transformer of `depth` blocks, at `size`x`size` with `controls` controls,
    the last `blocks_to_swap` of them resting in CPU memory (`train.blocks_to_swap`; their device copies count
    as activations). `transformer_config` overrides published config values (the tests use a narrower one).

    The step is the second one of a run: optimizer states exist already (a first step with zero gradients
    makes them). Samples are what the cache holds (latents and an unpadded text embedding of `text_tokens`),
    collated by the trainer's `collate`, their noise drawn by its `draw_noise`.
    """
    from editforge.models.block_swap import installed
    from editforge.models.lightning import SCHEDULER_CONFIG
    from editforge.train.config import LoraConfig, TrainConfig
    from editforge.train.objective import collate, draw_noise
    from editforge.train.step import make_accelerator, make_optimizer, optimizer_step, prepare_model

    tc = TrainConfig()
    accelerator = make_accelerator("bf16")
    latent = size // 8
    text_dim = transformer_config.get("joint_attention_dim", TEXT_DIM)
    samples = [{"target": torch.zeros(LATENT_CHANNELS, latent, latent),
                **{f"control_{i}": torch.zeros(LATENT_CHANNELS, latent, latent) for i in range(controls)},
                "prompt_embeds": torch.zeros(text_tokens, text_dim)} for _ in range(batch)]
    with FakeGPU() as gpu:
        pipe = SimpleNamespace(transformer=models.transformer(gpu, num_layers=depth, **transformer_config))
        params = prepare_model(pipe, LoraConfig(rank=TRAIN_RANK, alpha=TRAIN_RANK),
                               quantize=None if base == "bf16" else base, gradient_checkpointing=True,
                               blocks_to_swap=blocks_to_swap, device=gpu.device)
        swap = installed(pipe.transformer)
        optimizer = make_optimizer(params, tc)
        _create_optimizer_states(optimizer, params)
        tensors = collate(samples, gpu.device, models.DTYPE)
        sigmas, noise = draw_noise(tensors["target"], tc, SCHEDULER_CONFIG, seed=(0, 0, 0))
        counter = FlopCount()
        copied_before = swap.copied_bytes if swap else 0
        with deterministic_collection(), MemoryTracker(pipe.transformer, optimizer, device=gpu.device) as memory, \
                counter, memory.stage("train_step"), gpu.syncs.region("train_step"):
            optimizer_step(accelerator, pipe.transformer, params, optimizer, [(tensors, sigmas, noise)],
                           max_grad_norm=tc.max_grad_norm)
        swapped = {"blocks_swapped": blocks_to_swap, "pinned_bytes": swap.pinned_bytes,
                   "copied_bytes": swap.copied_bytes - copied_before} if swap else {}
        syncs = gpu.syncs.summary("train_step")
        notes = [f"value read from the GPU, unknown here (0 assumed): {where}" for where in gpu.known.unknown_reads]
    phases = {phase: memory.peak("train_step", phase).as_dict() for phase in PHASES}
    return Row(stage="train_step", model="qwen-image-edit-2509", size=size, references=controls, batch=batch,
               dtype=base, flops=counter.total, **memory.peak("train_step").as_dict(), phases=phases,
               host_syncs=sum(site["count"] for site in syncs), sync_sites=syncs, text_tokens=text_tokens,
               image_tokens=(latent // 2) ** 2 * (1 + controls) * batch, depth=depth, notes=notes, **swapped)


def _create_optimizer_states(optimizer: torch.optim.Optimizer, params) -> None:
    """A step with zero gradients: AdamW allocates its two moments per parameter, as on a run's first step."""
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
