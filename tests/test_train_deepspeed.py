"""A 2-process DeepSpeed ZeRO-2 run of `editforge train` on CPU (gloo), with the shipped launch config:
sharded optimizer checkpoints, the LoRA file, and a resume that repeats the uninterrupted run exactly.

DeepSpeed would JIT-compile its shared-memory all-reduce for the CPU first (C++, 84 s here); EditForge's CPU
path goes without it (gloo does the all-reduce), so a launch takes about 20 s on a fresh machine too."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from editforge.train.logs import read_metrics
from tests.helpers import accelerate_launch, launch_failure, write_samples

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-qwen-image-edit-2509"


def launch(run_yaml: Path, *extra: str, extensions: Path) -> subprocess.CompletedProcess:
    # The example config as shipped (8 GPUs, bf16), cut down on the command line to 2 CPU processes in fp32.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(extensions)}
    proc = accelerate_launch("--config_file", "examples/accelerate-zero2.yaml", "--num_processes", "2",
                             "--mixed_precision", "no", "-m", "editforge", "train", str(run_yaml), *extra,
                             cwd=ROOT, env=env, timeout=400)
    assert proc.returncode == 0, launch_failure(proc)
    return proc


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU (gloo) path; on GPUs the launch config runs as is")
def test_zero2_two_processes_on_cpu_checkpoint_and_resume(tmp_path):
    samples = write_samples(tmp_path)
    # Build the tiny model here, once, before the two ranks start (in a fresh EDITFORGE_HOME both would
    # build it at the same time; one such run saw a rank find text_encoder/ without its weights).
    from editforge.models.tiny import tiny_model_dir

    tiny_model_dir(MODEL)
    out = tmp_path / "out"
    # gradient_accumulation 2 while the launch config says 1: the run's value must win (the env var that
    # `accelerate launch` sets would otherwise override it).
    raw = {"model": MODEL, "output_dir": str(out), "seed": 0,
           "data": {"samples": samples, "batch_size": 1, "max_pixels": 64 * 64, "condition_pixels": 56 * 56,
                    "cache_dir": str(tmp_path / "cache")},
           "lora": {"rank": 4, "alpha": 4},
           "train": {"steps": 4, "learning_rate": 1e-2, "mixed_precision": "no", "gradient_accumulation": 2,
                     "lr_scheduler": "cosine", "warmup_steps": 1},
           "checkpoint": {"every": 2, "keep": 5}, "log_every": 1}
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(raw))

    extensions = tmp_path / "torch-extensions"
    launch(run_yaml, extensions=extensions)
    assert not extensions.exists()  # no C++ op was compiled (DeepSpeed's CPU shm all-reduce took 84 s)
    first = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in first] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in first)
    lora_first = load_file(str(out / "lora.safetensors"))
    assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in lora_first.items())  # lora_B starts at 0

    ckpt = out / "checkpoints" / "step-000002"
    files = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*")}
    # DeepSpeed's own checkpoint: one optimizer shard per rank (ZeRO-2), the LoRA-only module states.
    assert {"pytorch_model/zero_pp_rank_0_mp_rank_00_optim_states.pt",
            "pytorch_model/zero_pp_rank_1_mp_rank_00_optim_states.pt", "pytorch_model/mp_rank_00_model_states.pt",
            "lora_state.safetensors", "random_states_0.pkl", "random_states_1.pkl", "trainer_state.json"} <= files
    assert (ckpt / "pytorch_model" / "mp_rank_00_model_states.pt").stat().st_size < 1_000_000  # no frozen base
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 2

    # Resume from step 2: steps 3-4 are redone from the sharded optimizer state and must repeat exactly.
    launch(run_yaml, "--resume", str(ckpt), extensions=extensions)
    again = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in again], [r["loss"] for r in first], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([r["lr"] for r in again], [r["lr"] for r in first], rtol=1e-6)
    lora_again = load_file(str(out / "lora.safetensors"))
    assert lora_again.keys() == lora_first.keys()
    for key in lora_first:
        torch.testing.assert_close(lora_again[key], lora_first[key], rtol=1e-5, atol=1e-6)

    # The exported file is what `editforge edit --lora` takes.
    import editforge

    pipe = editforge.load_pipeline(MODEL, device="cpu", loras=[str(out / "lora.safetensors")])
    assert pipe.transformer is not None
