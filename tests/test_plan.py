"""The full-size plan's machinery, on small architectures: the fake GPU, FLOPs, memory, host syncs, depth."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch._subclasses.fake_tensor import FakeTensorMode

from editforge.plan import depth, models, stages
from editforge.plan.fake import FakeGPU
from editforge.plan.flops import FlopCount
from editforge.plan.memory import MemoryTracker

# The full-size transformer's width at 2-3 blocks: its shapes, few of its FLOPs.
NARROW = 2


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
        transformer = models.transformer(gpu, num_layers=NARROW)
        with torch.no_grad(), FlopCount() as flops:
            _transformer_call(transformer, 512, 100, gpu.device)
    expected = transformer_flops(transformer.config, 2 * 32 * 32, 100)
    assert flops.total == pytest.approx(expected, rel=0.01)


def test_cpu_attention_flops_are_counted():
    q = torch.randn(1, 2, 64, 16)
    with FlopCount() as flops:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert flops.total == 4 * 2 * 64 * 64 * 16  # QK^T and AV, 2 FLOPs per multiply-add


def _tiny_training_step(transformer, params, optimizer):
    from editforge.train.objective import flow_matching_loss

    batch = {"target": torch.randn(1, 4, 16, 16), "controls": [torch.randn(1, 4, 16, 16)],
             "prompt_embeds": torch.randn(1, 20, 16), "prompt_mask": None}
    loss = flow_matching_loss(transformer, batch, torch.rand(1), torch.randn_like(batch["target"]))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# The real CPU kernel of the scalar loss hands back a 4 KiB block for its 4-byte result; its meta kernel, 4 bytes.
REAL_CPU_SCALAR = 4096


def _tracked_training_step(fake: bool) -> dict:
    from editforge.models.tiny import build_transformer
    from editforge.train.config import LoraConfig
    from editforge.train.lora import add_lora

    with FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext():
        torch.manual_seed(0)
        transformer = build_transformer()
        params = add_lora(SimpleNamespace(transformer=transformer), LoraConfig(rank=4, alpha=8))
        transformer.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        stages._create_optimizer_states(optimizer, params)
        with MemoryTracker(transformer, optimizer, device="cpu") as memory:
            _tiny_training_step(transformer, params, optimizer)
    return memory.peak().as_dict()


def test_memory_tracker_on_fake_tensors_measures_what_it_measures_on_real_ones():
    """One LoRA training step of the tiny transformer, tracked on real CPU tensors and on fake ones: the same
    weights, gradients and optimizer states, and the same peak but for the CPU's over-allocated scalar."""
    real, fake = _tracked_training_step(fake=False), _tracked_training_step(fake=True)
    assert {k: real[k] for k in ("weights", "gradients", "optimizer")} == \
           {k: fake[k] for k in ("weights", "gradients", "optimizer")}
    assert fake["weights"] > 0 and fake["optimizer"] > 0 and fake["activations"] > 0
    assert real["peak_bytes"] - fake["peak_bytes"] == REAL_CPU_SCALAR - 4


def test_gradient_checkpointing_keeps_one_block_input_per_block():
    """Per extra block, a checkpointed step keeps about the block's inputs (image + text tokens x width x
    2 bytes), not its activations; torch's FlopCounterMode, which hooks every module's output, kept them all."""
    rows = [stages.training_row(512, 1, 1, "bf16", text_tokens=100, depth=d) for d in (2, 3)]
    per_block = rows[1].activations - rows[0].activations
    inputs = (2 * 32 * 32 + 100) * 3072 * 2
    assert inputs * 0.9 < per_block < inputs * 2.5


def test_a_training_step_is_affine_in_the_depth():
    """Steps at 2 and 3 blocks predict a step at 5 blocks exactly (what `editforge bench plan` relies on)."""
    measured = {d: stages.training_row(512, 1, 1, "bf16", text_tokens=100, depth=d) for d in (2, 3, 5)}
    predicted = depth.extrapolate(measured[2], measured[3], 5)
    for name in depth.AFFINE_FIELDS:
        assert getattr(predicted, name) == getattr(measured[5], name), name


def test_the_training_step_names_its_host_syncs():
    """One optimizer step of the trainer: every host read of a GPU value is listed with its line."""
    row = stages.training_row(512, 1, 1, "bf16", text_tokens=100, depth=2)
    assert row.host_syncs == len(row.sync_sites)
    assert all(site["where"].startswith("editforge/train/") for site in row.sync_sites)


def test_generation_stages_have_no_host_sync_in_the_denoising_loop_and_catch_one_added(monkeypatch):
    """The full-size Edit-2509 pipeline through `editforge.generate`: stage FLOPs and peaks, and not one host
    sync per denoising step. A `.item()` added to the scheduler step (what a careless change would do) is
    counted, once per step, at its line."""
    rows = {r.stage: r for r in stages.generation_rows("qwen-image-edit-2509", [1])}
    assert rows["denoise_step"].host_syncs == 0
    assert rows["denoise_step"].flops == pytest.approx(1.68e14, rel=0.02)  # 1024² + one 1 MP reference
    assert rows["denoise_step"].weights > 50 * 2**30 and rows["text_encode"].text_tokens > 0
    assert rows["vae_encode"].calls == 1

    from diffusers import FlowMatchEulerDiscreteScheduler

    original = FlowMatchEulerDiscreteScheduler.step

    def careless_step(self, model_output, timestep, sample, **kwargs):
        sample.abs().max().item()
        return original(self, model_output, timestep, sample, **kwargs)

    monkeypatch.setattr(FlowMatchEulerDiscreteScheduler, "step", careless_step)
    rows = {r.stage: r for r in stages.generation_rows("qwen-image-edit-2509", [1])}
    assert rows["denoise_step"].host_syncs == 1
    assert "test_plan.py" in rows["denoise_step"].sync_sites[0]["where"]


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
