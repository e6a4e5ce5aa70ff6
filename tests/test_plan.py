"""The full-size plan's machinery, on small architectures: the fake GPU, FLOPs, memory, host syncs, depth."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from editforge.plan import depth, models, stages
from editforge.plan.fake import FakeGPU
from editforge.plan.flops import FlopCount
from editforge.plan.memory import MemoryTracker

# The full-size transformer at 2 blocks: its shapes, few of its FLOPs.
SHORT = 2
# Narrower still for the training-step tests: 4 heads x 128 (width 512) instead of 24.
NARROW = {"num_attention_heads": 4}
NARROW_WIDTH = 4 * 128


def _transformer_call(transformer, image_side: int, text_tokens: int, device, dtype=torch.bfloat16):
    latent = image_side // 16  # VAE x8, then 2x2 patches
    tokens = 2 * latent * latent  # the target and one reference
    return transformer(
        hidden_states=torch.randn(1, tokens, transformer.config.in_channels, dtype=dtype, device=device),
        encoder_hidden_states=torch.randn(1, text_tokens, transformer.config.joint_attention_dim, dtype=dtype,
                                          device=device),
        encoder_hidden_states_mask=None, timestep=torch.tensor([0.5], dtype=dtype, device=device),
        img_shapes=[[(1, latent, latent), (1, latent, latent)]], return_dict=False)[0]


def test_full_width_transformer_flops_match_the_analytic_count_attention_included():
    """Measured FLOPs of two full-width blocks equal the per-block formula (linear layers + joint attention);
    an uncounted attention kernel (the CPU blind spot this module fixes) would miss about a third."""
    from editforge.benchmark.timing import transformer_flops

    with FakeGPU() as gpu:
        transformer = models.transformer(gpu, num_layers=SHORT)
        with torch.no_grad(), FlopCount() as flops:
            _transformer_call(transformer, 512, 100, gpu.device)
    expected = transformer_flops(transformer.config, 2 * 32 * 32, 100)
    assert flops.total == pytest.approx(expected, rel=0.01)


def test_cpu_attention_flops_are_counted():
    q = torch.randn(1, 2, 64, 16)
    with FlopCount() as flops:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert flops.total == 4 * 2 * 64 * 64 * 16  # QK^T and AV, 2 FLOPs per multiply-add


# The real CPU kernels of a few scalar results (the loss, its mean) hand back a 4 KiB block for 4 bytes;
# their meta kernels, 4 bytes. Nothing else may differ.
CPU_SCALAR_BLOCKS = 4 * 4096


def _tracked_training_step(base: str, fake: bool) -> dict:
    """One optimizer step of the tiny transformer as `editforge train` sets it up, tracked by MemoryTracker."""
    from editforge.models.registry import FAMILIES
    from editforge.models.tiny import build_transformer
    from editforge.plan.fake import fake_module_conversions
    from editforge.train.config import LoraConfig
    from editforge.train.objective import flow_matching_loss
    from editforge.train.step import prepare_model

    with (FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()), \
            fake_module_conversions():
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        try:
            pipe = SimpleNamespace(transformer=build_transformer(FAMILIES["qwen-image-edit-2509"]))
        finally:
            torch.set_default_dtype(torch.float32)
        params = prepare_model(pipe, LoraConfig(rank=4, alpha=8), quantize=None if base == "bf16" else base,
                               gradient_checkpointing=True)
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        stages._create_optimizer_states(optimizer, params)
        batch = {"target": torch.randn(1, 4, 32, 32, dtype=torch.bfloat16),
                 "controls": [torch.randn(1, 4, 32, 32, dtype=torch.bfloat16)],
                 "prompt_embeds": torch.randn(1, 20, 16, dtype=torch.bfloat16), "prompt_mask": None}
        with MemoryTracker(pipe.transformer, optimizer, device="cpu") as memory:
            loss = flow_matching_loss(pipe.transformer, batch, torch.rand(1), torch.randn_like(batch["target"]))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return memory.peak().as_dict()


@pytest.mark.parametrize("base", ["bf16", "int8", "fp8"])
def test_memory_tracker_on_fake_tensors_measures_what_it_measures_on_real_ones(base):
    """One LoRA training step of the tiny transformer on a bf16, int8 (quanto) or fp8 (torchao) base, tracked
    on real CPU tensors and on fake ones: the same weights, gradients and optimizer states; the same
    activations and peak but for the CPU's over-allocated scalars."""
    real, fake = _tracked_training_step(base, fake=False), _tracked_training_step(base, fake=True)
    assert {k: real[k] for k in ("weights", "gradients", "optimizer")} == \
           {k: fake[k] for k in ("weights", "gradients", "optimizer")}
    assert fake["weights"] > 0 and fake["optimizer"] > 0 and fake["activations"] > 0
    assert 0 <= real["peak_bytes"] - fake["peak_bytes"] <= CPU_SCALAR_BLOCKS


def test_gradient_checkpointing_keeps_one_block_input_per_block():
    """Gradient checkpointing: per extra block, a step keeps exactly that block's input (image + text tokens x
    width x 2 bytes) until the backward pass, not its activations. (torch's FlopCounterMode, whose hooks keep
    every module's output, made it 1.6 GB per block at 1024x1024.)"""
    rows = [stages.training_row(512, 1, 1, "bf16", text_tokens=100, depth=d, **NARROW) for d in (2, 3)]
    per_block = rows[1].phases["forward"]["activations"] - rows[0].phases["forward"]["activations"]
    assert per_block == (2 * 32 * 32 + 100) * NARROW_WIDTH * 2


def test_a_training_step_is_affine_in_the_depth_phase_by_phase():
    """Steps at 2 and 3 blocks predict a step at 7 blocks exactly, phase by phase (what `editforge bench plan`
    relies on to report 60 blocks; it also checks one configuration at full depth)."""
    measured = {d: stages.training_row(512, 1, 1, "bf16", text_tokens=100, depth=d, **NARROW) for d in (2, 3, 7)}
    predicted = depth.extrapolate(measured[2], measured[3], 7)
    for name in (*depth.COUNTED, *depth.MEMORY):
        assert getattr(predicted, name) == getattr(measured[7], name), name
    assert predicted.phases == measured[7].phases


def test_a_swapped_training_step_is_affine_in_depth_and_swapped_blocks():
    """`train.blocks_to_swap` on the fake GPU: steps at (4 blocks, 3 swapped), (5, 3) and (5, 4) predict a step at
    (8, 5) exactly, phase by phase; each swapped block rests in CPU memory (pinned on a GPU) and is copied in twice
    per step (forward and recomputation); no host sync is added."""
    plane = [stages.training_row(512, 1, 1, "bf16", text_tokens=100, depth=d, blocks_to_swap=swapped, **NARROW)
             for d, swapped in depth.SWAP_POINTS]
    measured = stages.training_row(512, 1, 1, "bf16", text_tokens=100, depth=8, blocks_to_swap=5, **NARROW)
    predicted = depth.extrapolate(*plane[:2], 8, more_swapped=plane[2], swapped=5)
    for name in (*depth.COUNTED, *depth.MEMORY):
        assert getattr(predicted, name) == getattr(measured, name), name
    assert predicted.phases == measured.phases and predicted.blocks_swapped == 5
    per_block = plane[2].pinned_bytes - plane[1].pinned_bytes
    assert per_block > 0 and measured.pinned_bytes == 5 * per_block and measured.copied_bytes == 2 * 5 * per_block
    assert measured.weights == plane[1].weights + 3 * (plane[1].weights - plane[0].weights) - 2 * per_block
    assert measured.host_syncs == 0
    with pytest.raises(ValueError, match="3 or more swapped blocks"):
        depth.extrapolate(*plane[:2], 8, more_swapped=plane[2], swapped=2)


@pytest.mark.parametrize("base", ["fp8", "int8"])
def test_a_quantized_base_swaps_on_the_fake_gpu(base):
    """The plan's quantized swapped rows: the swapped blocks' quantized weights (data and scales) leave the GPU,
    exactly their pinned bytes, and are copied back twice per step."""
    plain, swapped = (stages.training_row(512, 1, 1, base, text_tokens=100, depth=4, blocks_to_swap=n, **NARROW)
                      for n in (0, 3))
    assert swapped.pinned_bytes > 0 and swapped.copied_bytes == 2 * swapped.pinned_bytes
    assert plain.weights - swapped.weights == swapped.pinned_bytes
    assert swapped.host_syncs == plain.host_syncs


def test_the_training_step_names_its_host_syncs():
    """One optimizer step of the trainer: every host read of a GPU value is listed with its line."""
    row = stages.training_row(512, 1, 1, "bf16", text_tokens=100, depth=2, **NARROW)
    assert row.host_syncs == len(row.sync_sites)
    assert all(site["where"].startswith("editforge/train/") for site in row.sync_sites)


def test_generation_stages_have_no_host_sync_in_the_denoising_loop_and_catch_one_added(monkeypatch):
    """The Edit-2509 pipeline through `editforge.generate` on the fake GPU (the tiny model's shapes: the
    same code): stage FLOPs and peaks, and not one host sync per denoising step. A `.item()` added to the
    scheduler step (what a careless change would do) is counted, once per step, at its line."""
    rows = {r.stage: r for r in stages.generation_rows("qwen-image-edit-2509", [1], tiny=True)}
    assert rows["denoise_step"].host_syncs == 0 and rows["denoise_step"].flops > 0
    assert rows["text_encode"].host_syncs > 0 and rows["text_encode"].text_tokens > 0  # the vision tower's
    assert rows["vae_encode"].calls == 1 and rows["denoise_step"].weights > 0

    from diffusers import FlowMatchEulerDiscreteScheduler

    original = FlowMatchEulerDiscreteScheduler.step

    def careless_step(self, model_output, timestep, sample, **kwargs):
        sample.abs().max().item()
        return original(self, model_output, timestep, sample, **kwargs)

    monkeypatch.setattr(FlowMatchEulerDiscreteScheduler, "step", careless_step)
    rows = {r.stage: r for r in stages.generation_rows("qwen-image-edit-2509", [1], tiny=True)}
    assert rows["denoise_step"].host_syncs == 1
    assert "test_plan.py" in rows["denoise_step"].sync_sites[0]["where"]


def test_a_full_size_denoising_step_costs_what_the_design_notes_say():
    """Edit-2509 at 1024x1024 with one 1 MP reference: 1.7e14 FLOP per step (DESIGN.md), all bf16 weights of
    the pipeline resident (text encoder, transformer, VAE: 57.7 GB)."""
    rows = {r.stage: r for r in stages.generation_rows("qwen-image-edit-2509", [1])}
    assert rows["denoise_step"].flops == pytest.approx(1.68e14, rel=0.02)
    assert rows["denoise_step"].weights == pytest.approx(57.7e9, rel=0.01)
    assert rows["denoise_step"].image_tokens == 8192 and rows["denoise_step"].host_syncs == 0


def test_known_values_carry_the_vision_towers_bookkeeping():
    """Small integer tensors keep their values on the fake GPU (ids, grids): `.tolist()`, data-dependent
    shapes and `torch.tensor([...])` of them work; a value computed from weights is unknown and assumed 0."""
    with FakeGPU() as gpu:
        grid = torch.tensor([[1, 4, 6]]).to(gpu.device)
        assert grid.tolist() == [[1, 4, 6]]
        lengths = torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0])
        assert lengths.shape == (1,) and lengths.tolist() == [24]
        assert torch.tensor([grid.sum()], device=gpu.device).tolist() == [11]
        weights = torch.nn.Linear(8, 8, device=gpu.device)
        assert weights(torch.ones(2, 8, device=gpu.device)).sum().item() == 0.0
        assert len(gpu.known.unknown_reads) == 1
        assert gpu.syncs.count("(outside)") >= 3  # the reads of GPU values above


def test_fp8_picks_fp8_matmuls_from_compute_capability_8_9(monkeypatch):
    """The GPU-only branch of `--quantize fp8`, forced: fp8 matmuls on Ada/Hopper, fp8 weights only before."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig

    from editforge.models import loading

    for capability, expected in (((9, 0), Float8DynamicActivationFloat8WeightConfig),
                                 ((8, 9), Float8DynamicActivationFloat8WeightConfig),
                                 ((8, 0), Float8WeightOnlyConfig), (None, Float8WeightOnlyConfig)):
        monkeypatch.setattr(loading, "cuda_capability", lambda device, c=capability: c)
        assert isinstance(loading.fp8_config("cuda:0"), expected)


def test_compiled_blocks_compile_once_for_rows_of_every_size_and_reference_count():
    """Regional compile as synth uses it: rows of five sizes and one to three references share one graph,
    with no graph break. (Static shapes, the default of torch.compile, compile again for every new size.)"""
    import editforge
    from editforge.plan.compile_check import compile_report

    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu")
    report = compile_report(pipe)
    assert report["graph_breaks"] == 0 and report["graphs"] == 1 and report["recompiles"] == 0


@pytest.mark.parametrize("base", ["int8", "fp8"])
def test_block_swap_sends_a_quantized_base_to_the_gpu_part_by_part(base):
    """As `editforge train` does it: the transformer waits on the CPU, then swap sends all but the swapped blocks'
    frozen weights to the GPU. A quantized weight goes with its data and scales (moving only its wrapper would leave
    them on the CPU: the first matmul on a real GPU would fail)."""
    from types import SimpleNamespace

    from editforge.models.block_swap import plain_parts
    from editforge.plan import models
    from editforge.plan.fake import FakeGPU
    from editforge.train.config import LoraConfig
    from editforge.train.step import prepare_model

    with FakeGPU() as gpu:
        transformer = models.transformer(gpu, num_layers=4, **NARROW).to("cpu")
        prepare_model(SimpleNamespace(transformer=transformer), LoraConfig(rank=4, alpha=4), quantize=base,
                      gradient_checkpointing=True, blocks_to_swap=2, device=gpu.device)
        places = {}
        for name, param in transformer.named_parameters():
            swapped = name.startswith(("transformer_blocks.2.", "transformer_blocks.3.")) and not param.requires_grad
            places.setdefault((swapped, frozenset(part.device.type for part in plain_parts(param))), []).append(name)
    assert set(places) == {(True, frozenset({"cpu"})), (False, frozenset({gpu.device.type}))}, \
        {key: names[:2] for key, names in places.items()}
    assert any(".lora_A." in name for name in places[(False, frozenset({gpu.device.type}))])


def _step_row(base: str, swapped: int, peak: int, pinned: int) -> dict:
    return {"stage": "train_step", "model": "qwen-image-edit-2509", "dtype": base, "size": 1024, "references": 1,
            "batch": 1, "blocks_swapped": swapped, "peak_bytes": peak, "pinned_bytes": pinned}


def test_the_swap_lines_loading_checks_reproduce_every_swapped_row():
    """`memory_table`'s line per configuration (need and pinned memory per swapped block, from 3 up) gives back
    the needs of every measured swapped row; rows off one line (the peak moved to another phase) stop the plan."""
    from editforge.plan.fit import memory_table, needs

    GiB = 2**30
    peak = lambda swapped: 45 * GiB - swapped * 600_000_000  # noqa: E731
    rows = [_step_row("bf16", s, peak(s), s * 650_000_000) for s in (0, 8, 16, 30, 45)]
    lines = memory_table({"rows": rows, "components": {}})["training_swapped"]["bf16/1024/1/1"]
    assert lines["from"] == 3
    (at, per_block), (pinned_at, pinned_per_block) = lines["needs"], lines["pinned"]
    for swapped in (8, 16, 30, 45):
        assert abs(at + per_block * (swapped - 3) - needs(peak(swapped))) <= 1
        assert pinned_at + pinned_per_block * (swapped - 3) == swapped * 650_000_000
    rows[3]["peak_bytes"] += 10**6
    with pytest.raises(ValueError, match="not on one line"):
        memory_table({"rows": rows, "components": {}})


def test_the_copy_time_model_counts_what_compute_cannot_hide():
    """Per pass over the swapped blocks: the first copy waits; the others show only beyond the previous block's
    compute (forward: a quarter of the step, backward: three quarters)."""
    from editforge.plan.report import _added_seconds

    # 10 of 40 blocks, 0.1 s per copy, a 16 s step: a block computes 0.1 s forward and 0.3 s backward
    assert _added_seconds(2.0, 16.0, 10, 40) == pytest.approx(0.1 + 0.1)
    # an 8 s step: 0.05 s forward per block, so each later forward copy shows 0.05 s
    assert _added_seconds(2.0, 8.0, 10, 40) == pytest.approx(0.1 + 9 * 0.05 + 0.1)
    assert _added_seconds(0.0, 8.0, 0, 40) == 0.0
