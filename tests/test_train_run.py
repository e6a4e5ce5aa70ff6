"""End to end on tiny models: a run's outputs, the saved LoRA, learning, int8 base, bad input, kill -9 + resume,
and a 2-process accelerate run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open

import editforge
from editforge.errors import EditForgeError
from editforge.train import TrainingDiverged, train
from editforge.train.config import DEFAULT_TARGET_MODULES, validate
from editforge.train.logs import read_metrics
from editforge.train.validation import LABEL_HEIGHT
from tests.helpers import accelerate_launch, launch_failure, write_image, write_samples

MODEL = "tiny-qwen-image-edit-2509"
AREAS = {"max_pixels": 64 * 64, "condition_pixels": 56 * 56}
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three samples (1 control, 2 controls, none), a corrupt one, and their files."""
    root = tmp_path_factory.mktemp("data")
    samples = write_samples(root)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n not really")
    corrupt = {"target": str(root / "bad.png"), "controls": [samples[0]["controls"][0]], "instruction": "broken"}
    # Same shapes as sample 0, another prompt length: shares its bucket, so batches mix the two (text padded).
    same_bucket = {"target": str(write_image(root / "t3.png", 6, (64, 32))),
                   "controls": [str(write_image(root / "c3.png", 7, (64, 32)))],
                   "instruction": "make the sky red and the grass a deep shade of blue"}
    return {"root": root, "samples": samples, "corrupt": corrupt, "same_bucket": same_bucket}


def config(out: Path, files, **sections) -> dict:
    raw = {
        "model": MODEL, "output_dir": str(out), "seed": 0,
        "data": {"samples": files["samples"], "batch_size": 1, **AREAS, "cache_dir": str(files["root"] / "cache")},
        "lora": {"rank": 4, "alpha": 4},
        "train": {"steps": 6, "learning_rate": 1e-3, "mixed_precision": "no", "gradient_checkpointing": False},
        "checkpoint": {"every": 3},
        "log_every": 1,
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return raw


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """6 steps in bf16 mixed precision (the default) with validation, gradient checkpointing, batch 2, repeats, a
    corrupt sample and a comfyui export."""
    out = tmp_path_factory.mktemp("run")
    validation = {"every": 3, "steps": 2, "cfg": 2.0, "samples": [data["samples"][1]]}
    raw = config(out, data, validation=validation, export_format="comfyui",
                 data={"samples": data["samples"] + [data["corrupt"], data["same_bucket"]], "batch_size": 2,
                       "repeats": 2},
                 train={"gradient_checkpointing": True, "learning_rate": 1e-2, "mixed_precision": "bf16"})
    return train(validate(raw)), raw


def test_run_writes_checkpoints_logs_previews_and_skips_the_corrupt_sample(run):
    result, raw = run
    out = result.output_dir
    assert len(result.cache.samples) == 4 and len(result.cache.skipped) == 1 and "bad.png" in result.cache.skipped[0]
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-000003", "step-000006"]
    files = {p.name for p in (out / "checkpoints" / "step-000003").iterdir()}
    assert {"lora_state.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json"} <= files
    state = json.loads((out / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert state["step"] == 3 and set(state["data"]) == {"epoch", "round"}
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(result.losses))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert {"train/lr", "train/grad_norm"} <= set(events.Tags()["scalars"]) and events.Tags()["images"]

    grid = Image.open(out / "validation" / "step-000006" / "0-grid.png")
    preview = Image.open(out / "validation" / "step-000006" / "0.png")
    # 2 controls, preview, reference, each labelled underneath
    assert grid.height == preview.height + LABEL_HEIGHT and grid.width > 3 * preview.width
    assert Image.open(out / "loss.png").size == (640, 360)


def test_the_last_preview_is_what_edit_makes_with_the_trained_lora(run):
    """A preview is `editforge.edit` with the in-training weights, bit for bit (not accelerate's autocast forward
    with fp32 outputs); the saved file through `edit --lora` gives it up to the rounding of fusing in bf16."""
    from safetensors.torch import load_file

    from editforge.train.lora import add_lora, load_trainable_state

    result, raw = run
    sample = raw["validation"]["samples"][0]
    controls = [Image.open(p) for p in sample["controls"]]
    preview = np.asarray(Image.open(result.output_dir / "validation" / "step-000006" / "0.png"), dtype=int)

    def edit(pipe):
        return np.asarray(editforge.edit(pipe, controls, sample["instruction"], seed=0, steps=2, cfg=2.0, **AREAS),
                          dtype=int)

    pipe = editforge.load_pipeline(MODEL, device="cpu", dtype="bf16")
    base = edit(pipe)
    add_lora(pipe, validate(raw).lora)  # the trainer's LoRA layers, fp32 on the bf16 base, with the run's weights
    load_trainable_state(pipe.transformer,
                         load_file(str(result.output_dir / "checkpoints" / "step-000006" / "lora_state.safetensors")))
    assert np.array_equal(edit(pipe), preview)

    for name, prefix in (("lora.safetensors", "transformer."), ("lora-comfyui.safetensors", "diffusion_model.")):
        path = result.output_dir / name
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
        assert keys and all(k.startswith(prefix) for k in keys)
        assert any(".lora_B." in k for k in keys) and any("img_mlp.net.2" in k for k in keys)
        # what `editforge edit --lora` does: the LoRA fused into the bf16 weights, which rounds each weight once
        # (measured: mean 0.46, max 4 levels); the LoRA itself moves the picture by a mean of 1.5
        fused = edit(editforge.load_pipeline(MODEL, device="cpu", dtype="bf16", loras=[str(path)]))
        assert np.abs(fused - preview).mean() < 0.75 and np.abs(fused - preview).max() <= 6, name
    assert np.abs(base - preview).mean() > 1.2  # ... and the LoRA did change the picture


def test_overfitting_cuts_the_loss(data, tmp_path):
    """Fixed-noise evaluation before and after 100 steps on two samples: the loss drops by a large factor."""
    from editforge.train.cache import load_cached
    from editforge.train.objective import collate, flow_matching_loss

    raw = config(tmp_path / "out", data, data={"samples": data["samples"][:2]},
                 lora={"rank": 8, "alpha": 8, "target_modules": DEFAULT_TARGET_MODULES + ["img_in", "proj_out"]},
                 train={"steps": 100, "learning_rate": 1e-2, "timestep_sampling": "uniform"},
                 checkpoint={"every": 1000})
    result = train(validate(raw))

    def eval_loss(pipe):
        generator, losses = torch.Generator().manual_seed(0), []
        for sample in result.cache.samples:
            batch = collate(load_cached([sample.path]), "cpu", torch.float32)
            for sigma in (0.1, 0.3, 0.5, 0.7, 0.9):
                noise = torch.randn(batch["target"].shape, generator=generator)
                with torch.no_grad():
                    losses.append(flow_matching_loss(pipe.transformer, batch, torch.tensor([sigma]), noise).item())
        return float(np.mean(losses))

    before = eval_loss(editforge.load_pipeline(MODEL, device="cpu"))
    after = eval_loss(editforge.load_pipeline(MODEL, device="cpu", loras=[str(result.lora)]))
    print(f"eval loss {before:.4f} -> {after:.4f} ({before / after:.1f}x)")
    assert before / after > 3


def test_bf16_mixed_precision_trains_an_fp32_lora_on_an_int8_base(data, tmp_path, monkeypatch):
    import editforge.train.step as step
    from optimum.quanto import QLinear

    quantized = []
    real = step.quantize_transformer
    monkeypatch.setattr(step, "quantize_transformer",
                        lambda t, kind, device=None: (quantized.append(t), real(t, kind, device)))
    raw = config(tmp_path / "out", data, train={"steps": 3, "quantize": "int8", "mixed_precision": "bf16"},
                 checkpoint={"every": 100})
    result = train(validate(raw))
    layer = quantized[0].transformer_blocks[0].attn.to_q
    assert isinstance(layer.base_layer, QLinear)
    assert layer.base_layer.weight._data.dtype == torch.int8 and layer.base_layer.weight.dtype == torch.bfloat16
    assert layer.lora_A["editforge"].weight.dtype == torch.float32
    assert all(np.isfinite(result.losses))
    with safe_open(str(result.lora), framework="pt") as fh:
        up = fh.get_tensor("transformer.transformer_blocks.0.attn.to_q.lora_B.weight")
    assert up.abs().sum() > 0  # lora_B starts at zero: it moved, so gradients flowed through the int8 layers
    assert up.dtype == torch.float32


def test_8bit_adamw_without_bitsandbytes_is_a_clear_error(monkeypatch):
    from editforge.train.config import TrainConfig
    from editforge.train.step import make_optimizer

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(EditForgeError, match="pip install bitsandbytes"):
        make_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainConfig(optimizer="adamw8bit"))


def test_bf16_mixed_precision_keeps_the_lora_in_fp32(data, tmp_path):
    raw = config(tmp_path / "out", data, train={"steps": 2, "mixed_precision": "bf16"}, checkpoint={"every": 100})
    result = train(validate(raw))
    assert all(np.isfinite(result.losses))
    state = result.output_dir / "checkpoints" / "step-000002" / "lora_state.safetensors"
    with safe_open(str(state), framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float32}


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    import editforge.train.step as step

    calls = []
    real = step.flow_matching_loss

    def poisoned(*args):
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(step, "flow_matching_loss", poisoned)
    raw = config(tmp_path / "out", data, checkpoint={"every": 2})
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3.*step-000002"):
        train(validate(raw))
    good = tmp_path / "out" / "checkpoints" / "step-000002"
    assert json.loads((good / "trainer_state.json").read_text())["step"] == 2
    with safe_open(str(good / "lora_state.safetensors"), framework="pt") as fh:
        assert all(torch.isfinite(fh.get_tensor(k)).all() for k in fh.keys())


def test_a_failing_save_leaves_the_previous_checkpoint_as_latest(data, tmp_path, monkeypatch):
    import editforge.train.checkpoint as checkpoint

    real, calls = checkpoint.save_file, []

    def disk_full(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    raw = config(tmp_path / "out", data, checkpoint={"every": 2})
    with pytest.raises(OSError, match="No space"):
        train(validate(raw))
    root = tmp_path / "out" / "checkpoints"
    assert [p.name for p in checkpoint.checkpoints(root)] == ["step-000002"]
    assert checkpoint.resolve_resume(root, "latest").name == "step-000002"
    monkeypatch.undo()
    with pytest.raises(EditForgeError, match="already holds checkpoints.*`resume=latest`"):
        train(validate(raw))  # a fresh start must not mix with the old run's checkpoints
    assert train(validate(raw), resume="latest").start_step == 2


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(*args, env_extra=None, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "editforge", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_kill_9_then_resume_latest_matches_an_uninterrupted_run(data, tmp_path):
    steps = 30  # with accumulation and a warmup + cosine schedule, whose positions must survive the kill too
    sections = dict(train={"steps": steps, "gradient_accumulation": 2, "lr_scheduler": "cosine", "warmup_steps": 5},
                    checkpoint={"every": 5})
    reference = train(validate(config(tmp_path / "reference", data, **sections)))

    out = tmp_path / "killed"
    path = write_config(tmp_path / "run.yaml", config(out, data, **sections))
    proc = cli("train", path)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_metrics(out / "metrics.jsonl")) < 12:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = len(read_metrics(out / "metrics.jsonl"))
    assert 12 <= logged < steps, "the run must be killed mid-way"

    resumed = cli("train", path, "--resume", "latest")
    output = resumed.communicate(timeout=180)[0]
    assert resumed.returncode == 0, output
    metrics = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == list(range(1, steps + 1))
    np.testing.assert_allclose([r["loss"] for r in metrics], reference.losses, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([r["lr"] for r in metrics][:5], [2e-4, 4e-4, 6e-4, 8e-4, 1e-3], rtol=1e-6)


@pytest.mark.slow
def test_two_process_accelerate_launch_on_cpu(data, tmp_path):
    out = tmp_path / "ddp"
    path = write_config(tmp_path / "ddp.yaml", config(out, data, data={"cache_dir": str(tmp_path / "cache")},
                                                      train={"steps": 3}, checkpoint={"every": 2}))
    # `--multi_gpu` is accelerate's torchrun launcher; without CUDA, train() asks for cpu=True and the two
    # processes form a gloo group. (`--cpu --num_processes 2` starts ONE process unless MPI is configured.)
    proc = accelerate_launch("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                             "--dynamo_backend", "no", "-m", "editforge", "train", str(path),
                             cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, launch_failure(proc)
    assert (out / "lora.safetensors").is_file()
    ckpt = out / "checkpoints" / "step-000002"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in ckpt.iterdir()}, proc.stderr[-4000:]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 3  # each rank cached its share
    assert "3 samples (3 encoded now, 0 reused)" in proc.stderr


def test_init_from_an_existing_lora_file(data, tmp_path, caplog):
    """Start from the (Lightning-layout) tiny LoRA: the trained file begins at the same weight deltas. Its layers on
    the last block's discarded text output are kept as they are, and the run says they do not learn."""
    from editforge.models.registry import FAMILIES
    from editforge.models.tiny import LIGHTNING_ALPHA, LIGHTNING_RANK, TINY_LIGHTNING_DIR, tiny_model_dir
    from safetensors.torch import load_file

    source = tiny_model_dir(MODEL) / TINY_LIGHTNING_DIR / FAMILIES["qwen-image-edit-2509"].lightning_files[8]
    raw = config(tmp_path / "out", data, lora={"init_from": str(source)},
                 train={"steps": 3, "learning_rate": 1e-12, "weight_decay": 0.0}, checkpoint={"every": 100})
    with caplog.at_level("WARNING", logger="editforge.train"):
        saved = load_file(str(train(validate(raw)).lora))
    [dead] = [r.getMessage() for r in caplog.records if "gradient of exactly 0" in r.getMessage()]
    assert dead.startswith("4 LoRA parameters got a gradient of exactly 0 in the first 3 steps")
    assert "transformer_blocks.1.attn.add_q_proj.lora_A.editforge.weight" in dead
    original = load_file(str(source))
    name = "transformer_blocks.1.attn.add_v_proj"
    ours = saved[f"transformer.{name}.lora_B.weight"] @ saved[f"transformer.{name}.lora_A.weight"]
    theirs = original[f"{name}.lora_up.weight"] @ original[f"{name}.lora_down.weight"]
    theirs *= LIGHTNING_ALPHA / LIGHTNING_RANK  # 2 here: a lost alpha shows
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    assert len(saved) == 2 * sum(1 for k in original if k.endswith("lora_down.weight"))


def test_a_preview_without_controls_on_an_edit_model_fails_before_training(data, tmp_path):
    """Caught while caching, not at the first validation hours later."""
    raw = config(tmp_path / "out", data, validation={"every": 1, "samples": [data["samples"][2]]})  # no controls
    with pytest.raises(EditForgeError, match=r"validation.samples\[0\]: .* need 1 to 3 control"):
        train(validate(raw))
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize("model", ["tiny-qwen-image", "tiny-qwen-image-edit", "tiny-qwen-image-edit-2509"])
def test_training_on_a_hopper_with_flash_attention(hopper_with_flash_attention, data, tmp_path, model):
    """bf16 training where diffusers' flash kernels would be picked: unpadded batches train on FlashAttention 2
    (3 has no backward), a padded batch (two prompts of different lengths) on a backend that takes its mask."""
    calls = hopper_with_flash_attention
    first, other, same_bucket = data["samples"][0], data["samples"][1], data["same_bucket"]
    if model == "tiny-qwen-image":
        samples = [{**first, "controls": []}, {**same_bucket, "controls": []}, data["samples"][2]]
    elif model == "tiny-qwen-image-edit":
        samples = [first, same_bucket, {**data["samples"][2], "controls": other["controls"][1:]}]
    else:
        samples = [first, same_bucket, other]
    raw = config(tmp_path / "out", data, model=model, data={"samples": samples, "batch_size": 2},
                 train={"steps": 2, "mixed_precision": "bf16", "gradient_checkpointing": True},
                 checkpoint={"every": 100})
    result = train(validate(raw))
    assert len(result.cache.samples) == 3 and all(np.isfinite(result.losses))
    assert calls["flash"] > 0 and calls["native, masked"] > 0, calls
    assert calls["_flash_3"] == 0 and calls["native"] == 0, calls


def test_edit_v1_skips_a_sample_without_a_control_and_names_it(data, tmp_path):
    """Edit v1's prompt template always holds an image, so a text-only sample cannot be encoded for it."""
    text_only = data["samples"][2]
    raw = config(tmp_path / "out", data, model="tiny-qwen-image-edit",
                 data={"samples": [data["samples"][0], text_only]}, train={"steps": 1}, checkpoint={"every": 100})
    result = train(validate(raw))
    assert len(result.cache.samples) == 1
    assert result.cache.skipped == [
        f"{text_only['target']}: 0 control images; qwen-image-edit trains on samples with one control image"]


def test_lightning_previews_are_what_edit_makes_with_lightning_and_the_trained_lora(data, tmp_path):
    """`validation.lightning: 8`: the preview stacks the family's Lightning LoRA on the trained one at its steps,
    cfg 1 and scheduler, as `editforge edit --lightning 8 --lora lora.safetensors`; training does not see it."""
    sample = data["samples"][1]
    raw = config(tmp_path / "lightning", data, validation={"every": 2, "samples": [sample], "lightning": 8},
                 train={"steps": 2})
    result = train(validate(raw))
    plain = config(tmp_path / "plain", data, validation={"every": 2, "samples": [sample], "steps": 8, "cfg": 1.0},
                   train={"steps": 2})
    without = train(validate(plain))
    assert result.losses == without.losses  # the Lightning adapter is off while training
    preview = np.asarray(Image.open(tmp_path / "lightning" / "validation" / "step-000002" / "0.png"), dtype=int)
    controls = [Image.open(p) for p in sample["controls"]]
    fast = editforge.load_pipeline(MODEL, device="cpu", lightning=8, loras=[str(result.lora)])
    expected = np.asarray(editforge.edit(fast, controls, sample["instruction"], seed=0, **AREAS), dtype=int)
    other = np.asarray(Image.open(tmp_path / "plain" / "validation" / "step-000002" / "0.png"), dtype=int)
    assert np.array_equal(expected, preview)  # in fp32, fusing rounds below a pixel level (measured: identical)
    # 8 steps and cfg 1 without Lightning's LoRA and scheduler: another picture (the tiny Lightning LoRA is weak:
    # measured mean 0.41, max 4 levels)
    assert np.abs(other - preview).mean() > 0.2


def test_validation_judge_scores_each_preview_beside_the_loss(data, tmp_path):
    """`validation.judge`: at each validation the judge (the model's own text encoder, loaded on the CPU) scores
    every preview as an edit of its controls by its instruction; judge.jsonl and TensorBoard get the scores."""
    import json

    from editforge.judge.ask import Pair, score_pairs
    from editforge.judge.model import load_judge

    samples = [data["samples"][0], data["samples"][1]]
    raw = config(tmp_path / "out", data, train={"steps": 4},
                 validation={"every": 2, "steps": 2, "samples": samples, "judge": True})
    result = train(validate(raw))
    lines = [json.loads(line) for line in (result.output_dir / "judge.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    judge = load_judge(MODEL, device="cpu")
    for line in lines:
        folder = result.output_dir / "validation" / f"step-{line['step']:06d}"
        pairs = [Pair(tuple(Image.open(c).convert("RGB") for c in s["controls"]),
                      Image.open(folder / f"{i}.png").convert("RGB"), s["instruction"]) for i, s in enumerate(samples)]
        assert line["scores"] == score_pairs(judge, pairs)  # what it judged: these previews, these instructions
        assert all(0 <= s <= 1 for s in line["scores"]) and line["judge_score"] == sum(line["scores"]) / 2
