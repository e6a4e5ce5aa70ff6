"""`editforge bench`: the tiny benchmark runs the same code as the full one (not timed here)."""

import json

import pytest
import torch

from editforge.benchmark import infer, report, train
from editforge.benchmark.architectures import full_text_encoder, full_transformer, full_vae, parameter_count
from editforge.benchmark.timing import transformer_flops
from editforge.errors import EditForgeError
from editforge.models.tiny import build_tokenizer
from tests.helpers import run_cli


def test_full_size_architectures_have_the_published_sizes():
    transformer = full_transformer()  # meta device: no memory
    assert 20.3e9 < parameter_count(transformer) < 20.5e9
    assert 8.2e9 < parameter_count(full_text_encoder(build_tokenizer())) < 8.4e9  # Qwen2.5-VL-7B
    assert 120e6 < parameter_count(full_vae()) < 135e6
    # DESIGN.md's count for a 1024^2 edit with one 1 MP reference: ~1.7e14 FLOP per denoise step
    assert transformer_flops(transformer.config, 8192, 250) == pytest.approx(1.7e14, rel=0.05)


def test_tiny_infer_benchmark_compares_configs():
    result = infer.run("tiny", configs=("seed", "fast", "fast-fp8"), workloads=((1, 4),), reps=1)
    rows = {r["config"]: r for r in result["rows"]}
    assert set(rows) == {"seed", "fast", "fast-fp8"}
    for row in rows.values():
        assert row["seconds"] > 0 and row["denoise_s"] > 0 and row["vae_s"] > 0 and row["text_s"] > 0
        assert row["denoise_tflops"] > 0
    assert rows["seed"]["notes"]["quantize"].startswith("optimum-quanto int8")
    assert rows["fast"]["notes"]["attention"] == "native"
    assert result["fp8_mean_abs_pixel_diff"] is not None
    text = report.markdown(result)
    assert "| fast | 1 | 4 |" in text and "vs seed" in text


def test_tiny_train_benchmark_via_cli(tmp_path):
    out = tmp_path / "train.json"
    result = run_cli("bench", "train", "--size", "tiny", "--json", out, "--markdown", tmp_path / "b.md")
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert {(r["base"], r["resolution"]) for r in data["rows"]} == {
        ("unquantized", 32), ("unquantized", 64), ("int8", 32), ("int8", 64)}
    assert all(r["samples_per_s"] > 0 for r in data["rows"])
    assert "samples/s" in (tmp_path / "b.md").read_text()


def test_full_size_needs_a_gpu_and_bad_arguments():
    with pytest.raises(EditForgeError, match="needs a CUDA GPU"):
        infer.run("full", device="cpu")
    with pytest.raises(EditForgeError, match="needs a CUDA GPU"):
        train.run("full", device="cpu")
    result = run_cli("bench", "infer", "--configs", "turbo")
    assert result.returncode == 2 and "unknown turbo" in result.stderr


def test_train_benchmark_trains_what_editforge_train_trains(monkeypatch):
    """The benchmark builds its model with the trainer's own `prepare_model` and steps it with `optimizer_step`;
    on an int8 base every LoRA parameter that can affect the output gets a gradient (a LoRA added before
    quantizing would itself become frozen int8 layers)."""
    from optimum.quanto import QLinear

    import editforge.train.step as step

    assert train.prepare_model is step.prepare_model and train.optimizer_step is step.optimizer_step
    built, grads = [], {}

    def watched(pipe, *args, **kwargs):
        params = step.prepare_model(pipe, *args, **kwargs)
        names = {id(p): name for name, p in pipe.transformer.named_parameters()}
        for p in params:
            p.register_post_accumulate_grad_hook(
                lambda p: grads.__setitem__(names[id(p)], grads.get(names[id(p)], 0.0) + p.grad.abs().sum().item()))
        built.append((pipe.transformer, params, kwargs))
        return params

    monkeypatch.setattr(train, "prepare_model", watched)
    train.measure("tiny", "int8", 32, device="cpu", dtype=torch.float32, steps=1, rate=1.0)  # warm-up + 1 step
    transformer, params, kwargs = built[0]
    assert kwargs["quantize"] == "int8" and kwargs["gradient_checkpointing"]
    assert isinstance(transformer.transformer_blocks[0].attn.to_q.base_layer, QLinear)
    trainable = {name for name, p in transformer.named_parameters() if p.requires_grad}
    # 12 layers a block, less the 4 of the last block whose output the model discards (test_train_lora_targets)
    assert len(trainable) == len(params) == 2 * (12 * len(transformer.transformer_blocks) - 4)
    assert {n for n, total in grads.items() if total > 0} == trainable
