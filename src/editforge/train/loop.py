"""`train(config)`: cache, add a LoRA, optimise, checkpoint, preview, export. Read it top to bottom.

Runs the same under `python -m editforge train` (one process) and `accelerate launch` (DDP or DeepSpeed
ZeRO-2, any number of processes): accelerate owns the process group, gradient all-reduce and the
sharded optimizer state; everything else here is rank-aware only where it must be (who caches which
sample, who writes files).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from editforge.errors import EditForgeError
from editforge.models.info import model_info
from editforge.models.lightning import CFG as LIGHTNING_CFG
from editforge.judge.model import find_judge
from editforge.models.loading import build_encoders, find_lightning, load_transformer, prepare_load
from editforge.models.registry import count_text
from editforge.progress import Progress
from editforge.train import checkpoint as ckpt
from editforge.train.buckets import BatchStream
from editforge.train.cache import CacheReport, build_cache, load_cached
from editforge.train.config import Config
from editforge.train.logs import RunLog, loss_curve, read_metrics
from editforge.train.lora import ZeroGradientWatch, save_lora
from editforge.train.validation import add_lightning, lightning_on
from editforge.train.objective import collate, draw_noise
from editforge.train.host_values import HostValues, StepValues
from editforge.train.step import make_accelerator, make_optimizer, optimizer_step, prepare_model
from editforge.train.validation import judge_previews, prepare_previews, preview_options, run_validation

log = logging.getLogger("editforge.train")
# Optimizer steps (after warmup, whose first step has a zero learning rate) in which every LoRA parameter must
# have had a nonzero gradient: lora_B leaves zero in the first, lora_A gets its gradient from the second on.
ZERO_GRADIENT_STEPS = 3
WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


class TrainingDiverged(EditForgeError):
    """The loss stopped being a finite number."""


@dataclass
class TrainResult:
    output_dir: Path
    lora: Path
    start_step: int
    losses: list[float] = field(default_factory=list)  # this process's run, one per optimizer step
    cache: CacheReport | None = None


def train(config: Config, *, resume: str | None = None, progress: Progress | None = None) -> TrainResult:
    """`progress` (shown by the main process): caching, then the optimizer steps."""
    from accelerate.utils import set_seed

    config.check_paths()
    existing = ckpt.checkpoints(config.output_dir / "checkpoints")
    if existing and not resume:
        # Starting over here would mix two runs' checkpoints, and `--resume latest` could pick the old one.
        raise EditForgeError(f"{config.output_dir} already holds checkpoints (up to {existing[-1].name}); "
                             "continue with `resume=latest`, or choose another output_dir")

    accelerator = make_accelerator(config.train.mixed_precision, config.train.gradient_accumulation)
    set_seed(config.seed)
    main = accelerator.is_main_process
    progress = progress if progress is not None and main else Progress()
    out = config.output_dir
    # Every training sample's prompt and images are distinct: an embedding cache would only hold memory.
    plan = prepare_load(config.model.name, dtype=WEIGHT_DTYPES[config.train.mixed_precision], reuse_embeddings=False,
                        device=str(accelerator.device), transformer=config.model.transformer,
                        text_encoder=config.model.text_encoder, vae=config.model.vae)
    family = plan.family
    config.check_family(family)
    if config.train.blocks_to_swap and accelerator.distributed_type == "DEEPSPEED":
        raise EditForgeError("train.blocks_to_swap does not combine with DeepSpeed (it places the model itself); "
                             "use DDP or one process")
    if any(f.is_gguf for f in plan.files):
        if config.train.quantize:
            raise EditForgeError("train.quantize: the GGUF transformer is quantized already; drop train.quantize")
        if config.train.blocks_to_swap:
            raise EditForgeError("train.blocks_to_swap: the blocks of a GGUF transformer (quantized) are not swapped; "
                                 "use a .safetensors transformer")
    vc = config.validation
    # the Lightning LoRA the previews stack on the trained one: found (or refused) before anything loads
    lightning_file = find_lightning(plan.spec, vc.lightning) if vc.lightning and vc.samples else None
    # the judge of the previews: its files (and language-model head) checked now, loaded at the first validation
    judge = PreviewJudge(find_judge(config.model.name, judge_model=vc.judge_model), vc.judge_device) \
        if vc.judge and vc.samples and main else None
    samples, unfit = training_samples(config, family)  # the dataset is read before the model loads
    if not samples:
        raise EditForgeError(f"no usable training samples ({len(unfit)} set aside: {'; '.join(unfit[:3])})")
    line = memory_line(config, plan, samples, str(accelerator.device))
    if line and main:
        progress.note(line)
    pipe = build_encoders(plan)  # the transformer loads after caching, when the text encoder is gone
    info = model_info(pipe)
    areas = dict(max_pixels=config.data.max_pixels or info.max_pixels,
                 condition_pixels=config.data.condition_pixels or info.condition_pixels)

    # 1. Encode the data once, before the transformer exists; then the text encoder (16 GB at full size) is freed,
    # no reference left, and the VAE leaves the GPU (back only to preview).
    cache, previews = encode_data(pipe, config, samples, unfit, areas, accelerator, progress)
    pipe.text_encoder = None
    pipe.vae.to("cpu")
    gc.collect()
    torch.cuda.empty_cache()

    # 2. The model: frozen (optionally quantized) base, trainable LoRA, optimizer, schedule.
    tc = config.train
    # with block swap the transformer stays on the CPU until prepare_model has sent all but the swapped weights over
    pipe.transformer = load_transformer(plan, device="cpu" if tc.blocks_to_swap else None)
    params = prepare_model(pipe, config.lora, quantize=tc.quantize, gradient_checkpointing=tc.gradient_checkpointing,
                           blocks_to_swap=tc.blocks_to_swap, device=str(accelerator.device))
    if lightning_file:
        add_lightning(pipe, lightning_file)
    optimizer = make_optimizer(params, tc)
    # before accelerator.prepare: its hooks must see each gradient before DDP or DeepSpeed takes it over
    watch = ZeroGradientWatch(pipe.transformer, params, steps=tc.warmup_steps + ZERO_GRADIENT_STEPS) if main else None
    from diffusers.optimization import get_scheduler

    lr_scheduler = get_scheduler(tc.lr_scheduler, optimizer, num_warmup_steps=tc.warmup_steps,
                                 num_training_steps=tc.steps)
    if accelerator.distributed_type == "DEEPSPEED":
        # No dataloader goes through prepare(), so DeepSpeed can't infer the micro-batch; and the run's
        # accumulation and clipping win over the launch config's (whose env var also overrode the
        # gradient_accumulation_steps passed to Accelerator above).
        accelerator.state.deepspeed_plugin.deepspeed_config.update(
            train_micro_batch_size_per_gpu=config.data.batch_size, gradient_accumulation_steps=tc.gradient_accumulation,
            gradient_clipping=tc.max_grad_norm)
        accelerator.gradient_accumulation_steps = tc.gradient_accumulation
    # no device placement under block swap: moving the model would bring the swapped weights onto the GPU
    placement = {"device_placement": [False, True]} if tc.blocks_to_swap else {}
    transformer, optimizer = accelerator.prepare(pipe.transformer, optimizer, **placement)
    accelerator.register_for_checkpointing(lr_scheduler)  # stepped by hand: once per optimizer step
    ckpt.register_lora_hooks(accelerator, pipe.transformer)
    stream = BatchStream([s.bucket for s in cache.samples], batch_size=config.data.batch_size,
                         repeats=config.data.repeats, seed=config.seed, rank=accelerator.process_index,
                         world_size=accelerator.num_processes)
    step = 0
    if resume:
        state = ckpt.load_checkpoint(accelerator, ckpt.resolve_resume(out / "checkpoints", resume))
        step = state["step"]
        stream.load_state_dict(state["data"])
    run_log = RunLog(out, enabled=main, resume_step=step)
    result = TrainResult(out, out / "lora.safetensors", step, cache=cache)

    # 3. The loop. Noise and timesteps depend on (seed, micro-step, rank) only: resuming redraws them exactly.
    def micro_batches(step: int):
        for micro in range(tc.gradient_accumulation):
            batch = collate(load_cached([cache.samples[i].path for i in next(stream)]), accelerator.device,
                            pipe.transformer.dtype)
            yield (batch, *draw_noise(batch["target"], tc, pipe.scheduler.config, seed=(
                config.seed, step * tc.gradient_accumulation + micro, accelerator.process_index)))

    # A step's loss reaches the host while the next step runs (editforge.train.host_values); it is checked
    # for nan before any checkpoint is written, so a diverged run never saves its weights.
    values = HostValues()

    def report(done: StepValues) -> None:
        if not done.finite:
            latest = ckpt.checkpoints(out / "checkpoints")
            raise TrainingDiverged(
                f"loss is {done.loss} at step {done.step}; stopped. Last good checkpoint: "
                f"{latest[-1] if latest else 'none yet'}. Lower train.learning_rate or check the data.")
        result.losses.append(done.loss)
        progress.advance(description=f"training · loss {done.loss:.4f}")
        run_log.step(done.step, done.loss, done.lr, done.grad_norm)
        if done.step % config.log_every == 0 and main:
            log.info("step %d/%d  loss %.4f  lr %.3g", done.step, tc.steps, done.loss, done.lr)

    transformer.train()
    progress.start("training", total=tc.steps, unit="step", completed=step)
    while step < tc.steps:
        loss, grad_norm = optimizer_step(accelerator, transformer, params, optimizer, micro_batches(step),
                                         max_grad_norm=tc.max_grad_norm)
        lr_scheduler.step()
        step += 1
        if watch is not None:
            watch.step()
            watch.report()
        values.send(step, loss, grad_norm, lr_scheduler.get_last_lr()[0])
        if len(values) > 1:
            report(values.receive())
        checkpoint = step % config.checkpoint.every == 0 or step == tc.steps
        preview = previews and (step % config.validation.every == 0 or step == tc.steps)
        if checkpoint or preview:
            for done in values.drain():
                report(done)
        if checkpoint:
            ckpt.save_checkpoint(accelerator, out / "checkpoints", step, {"data": stream.state_dict()},
                                 config.checkpoint.keep)
        if preview:
            validate(pipe, previews, out / "validation" / f"step-{step:06d}", config, areas, run_log, step, judge)
        accelerator.wait_for_everyone()

    # 4. Export.
    if main:
        metadata = {"model": config.model.name, "family": family.name, "steps": step, "rank": config.lora.rank}
        save_lora(pipe.transformer, result.lora, "diffusers", metadata)
        if config.export_format == "comfyui":
            save_lora(pipe.transformer, out / "lora-comfyui.safetensors", "comfyui", metadata)
        loss_curve([r["loss"] for r in read_metrics(run_log.path)], out / "loss.png")
    run_log.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def encode_data(pipe, config: Config, samples: list, unfit: list[str], areas: dict, accelerator,
                progress: Progress):
    """The cache (each process encodes its share) and the previews' prompt embeddings (main process)."""
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    progress.start("caching", total=len(samples[rank::world]), unit="sample")
    cache = build_cache(pipe, samples, config.cache_dir, vae_pixels=areas["max_pixels"],
                        condition_pixels=areas["condition_pixels"], rank=rank, world_size=world,
                        barrier=accelerator.wait_for_everyone, progress=progress.advance)
    cache.skipped += unfit
    if world > 1:  # each process counted only its own share
        cache.computed = int(accelerator.reduce(torch.tensor(cache.computed, device=accelerator.device), "sum"))
        cache.reused = len(cache.samples) - cache.computed
    if main:
        log.info("cache %s: %d samples (%d encoded now, %d reused), %d skipped", config.cache_dir,
                 len(cache.samples), cache.computed, cache.reused, len(cache.skipped))
        if cache.skipped:
            log.warning("skipped %d unusable sample(s): %s", len(cache.skipped), "; ".join(cache.skipped[:5]))
    if not cache.samples:
        raise EditForgeError("no usable training samples (all were skipped; see the warnings above)")
    previews = []
    if main and config.validation.samples:
        previews = prepare_previews(pipe, config.validation.samples, validation_options(pipe, config, areas))
    return cache, previews


def validation_options(pipe, config: Config, areas: dict):
    vc = config.validation
    if vc.lightning:  # as the user's fast pipeline runs it
        return preview_options(pipe, steps=vc.lightning, cfg=LIGHTNING_CFG, **areas)
    return preview_options(pipe, steps=vc.steps, cfg=vc.cfg, **areas)


def memory_line(config: Config, plan, samples: list, device: str) -> str | None:
    """On a GPU, before anything loads: what the run needs as the full-size plan measured it, against the card
    (`editforge.models.memory.training_memory_line`); None on a CPU."""
    if not device.startswith("cuda") or plan.options.transformer:
        return None
    from editforge.models.loading import transformer_config
    from editforge.models.memory import training_memory_line

    tc = config.train
    return training_memory_line(
        plan.family, transformer_config(plan.folder), base=tc.quantize,
        pixels=config.data.max_pixels or plan.spec.max_pixels,
        controls=max((len(s.controls) for s in samples), default=0),
        batch=config.data.batch_size, rank=config.lora.rank, checkpointing=tc.gradient_checkpointing,
        blocks_to_swap=tc.blocks_to_swap, card_bytes=torch.cuda.get_device_properties(torch.device(device)).total_memory)


def training_samples(config: Config, family) -> tuple[list, list[str]]:
    """Samples from `data.source` (read by editforge.dataset) plus inline ones; those the family can't take
    are set aside with the reason. Edit-2509 keeps samples without controls (text-to-image samples in an edit
    set); Edit v1 cannot encode them (its prompt template always holds an image)."""
    samples, unfit = list(config.data.samples), []
    if config.data.source is not None:
        from editforge.dataset import load_samples

        dataset = load_samples(config.data.source, source_format=config.data.source_format,
                               only_accepted=config.data.only_accepted, allow_outside=config.data.allow_outside)
        samples += dataset.samples
        unfit += [f"{key}: {reason}" for key, reason in dataset.skipped]
    usable = []
    for sample in samples:
        problems = getattr(sample, "problems", ())
        if problems:
            unfit.append(f"{sample.target}: {problems[0]}")
        elif sample.target is None:
            unfit.append(f"{sample.instruction[:40]!r}: no target image")
        elif len(sample.controls) not in family.training_image_counts:
            unfit.append(f"{sample.target}: {len(sample.controls)} control images; {family.name} trains on samples "
                         f"with {count_text(family.training_image_counts, 'control image')}")
        else:
            usable.append(sample)
    return usable, unfit


class PreviewJudge:
    """`validation.judge`: the judge, loaded once at the first validation, on `device`."""

    def __init__(self, source, device: str):
        self.source, self.device, self.judge = source, device, None

    def __call__(self, previews, images) -> list[float]:
        from editforge.judge.model import load_judge_from

        if self.judge is None:
            self.judge = load_judge_from(self.source, device=self.device)
        return judge_previews(self.judge, previews, images)


@torch.no_grad()
def validate(pipe, previews, folder: Path, config: Config, areas: dict, run_log: RunLog, step: int,
             judge: PreviewJudge | None = None) -> None:
    """Previews with the in-training weights (main process; the others wait at the barrier), judged when asked."""
    device = pipe.transformer.device
    pipe.transformer.eval()  # LoRA dropout off
    pipe.vae.to(device)
    with original_forward(pipe.transformer), lightning_on(pipe, config.validation.lightning):
        sheets, images = run_validation(pipe, previews, folder, validation_options(pipe, config, areas),
                                        seed=config.validation.seed)
    pipe.vae.to("cpu")
    pipe.transformer.train()
    run_log.images(step, sheets)
    if judge is not None:
        run_log.judged(step, judge(previews, images))


@contextlib.contextmanager
def original_forward(module):
    """Run `module` with the forward it had before `accelerator.prepare`, which wraps it in autocast with fp32
    outputs under mixed precision: previews must make what `editforge edit --lora` makes, in the weights' dtype."""
    original = module.__dict__.get("_original_forward")  # where accelerate keeps it
    if original is None:
        yield
        return
    wrapped = module.forward
    module.forward = original
    try:
        yield
    finally:
        module.forward = wrapped
