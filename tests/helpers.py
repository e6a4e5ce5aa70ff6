"""Builders the tests share: tiny images and workbooks, LoRA files, training samples, a review server, and the
command line run as a user runs it (a subprocess) or in this process (for messages that come before any work).

Test modules import from here (and from `tests.standins`, `tests.xlsx`, `tests.hostile`), never from each other.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

# --- images -----------------------------------------------------------------------------------------------------


def noise_image(width: int = 64, height: int = 64, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def write_image(path: Path, seed: int, size: tuple[int, int] = (64, 64), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(*size, seed=seed).save(path, format=fmt)
    return path


# --- synth workbooks --------------------------------------------------------------------------------------------

SYNTH_HEADERS = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "instruction", "need_gen"]
ONE_OF_EACH = [
    ["img/r0.png", None, None, None, "make a reference", "t", True],            # gen_ref
    [None, "img/r1.png", "img\\r2.png", None, "make the sample", "t", "yes"],   # gen_raw
    ["img/r0.png", "img/r1.png", None, None, "one more ref", "t", 1],          # gen_extra_ref
    ["img/r0.png", None, None, None, "", "t", True],                           # skipped: empty prompt
    ["img/nope.png", None, None, None, "missing input", "t", True],             # failed: missing file
    ["img/r0.png", None, None, None, "not wanted", "t", False],                # untouched
]
# What a reviewer finds: rows 2-4 generated, one made by hand, one failed, one blank.
REVIEW_ROWS = [
    ["img/r0.png", None, None, None, "make a reference", "t", True],             # 2 gen_ref
    [None, "img/r1.png", "img/r2.png", None, "make the sample", "t", True],      # 3 gen_raw
    ["img/r0.png", "img/r1.png", None, None, "one more ref", "t", True],         # 4 gen_extra_ref
    ["img/r0.png", "img/r1.png", None, None, "a pair made by hand", "t", False],  # 5 nothing generated
    ["img/nope.png", None, None, None, "missing input", "t", True],              # 6 fails: still to do
    [None, None, None, None, None, None, None],                                  # 7 blank: not shown
]
# `editforge synth` in a real process with the fake generator instead of a model (see editforge.cli.synth).
FAKE_GENERATOR = {"EDITFORGE_SYNTH_GENERATOR": "editforge.sheet.fake:make_generator"}
# ... taking a tenth of a second per picture, so a test can act while it runs.
SLOW_FAKE_GENERATOR = {**FAKE_GENERATOR, "EDITFORGE_FAKE_DELAY": "0.1"}


def make_workbook(folder: Path, rows=ONE_OF_EACH, name: str = "data.xlsx", images: int = 3) -> Path:
    """A workbook under `folder` with `images` small distinct input pictures in folder/img."""
    from editforge.sheet.workbook import create_workbook

    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        rng = np.random.default_rng(100 + i)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "img" / f"r{i}.png")
    return create_workbook(folder / name, SYNTH_HEADERS, rows)


def run_synth(path: Path, generator=None, **options):
    """Synth in this process with `generator` (default: the fake one)."""
    from editforge.sheet.fake import fake_generator
    from editforge.sheet.synth import SynthOptions, synth

    return synth(path, lambda: generator or fake_generator(), SynthOptions(**options))


def cells(path: Path) -> dict[int, dict]:
    """Every row of the workbook at `path`, by row number: {column key: value}."""
    from editforge.sheet.workbook import open_workbook

    return dict(open_workbook(path).rows())


def other_process_change(path: Path, row: int, changed: dict) -> None:
    """A change to `row` recorded in the workbook's journal as another process (a second app, synth) would."""
    from editforge.sheet.journal import Journal
    from editforge.sheet.workbook import open_workbook

    with Journal.for_workbook(path) as journal:
        journal.record_change("Sheet", open_workbook(path).row_id(row), changed, row=row)


def outputs(folder: Path) -> set[str]:
    """Every file under the output folders, as cell paths (temp files included: there must be none)."""
    root = folder / "generated"
    return {p.relative_to(folder).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def cell_paths(path: Path) -> set[str]:
    from editforge.sheet.workbook import open_workbook

    book = open_workbook(path)
    return {str(v) for _, row in book.rows() for k, v in row.items() if k.startswith(("raw", "ref")) and v}


# --- dataset workbooks ------------------------------------------------------------------------------------------

DATASET_HEADERS = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "need_gen",
                   "edit_prompt", "category", "gen_status", "review"]


def make_dataset_workbook(root: Path, n: int = 3, controls: int = 2, name: str = "book.xlsx", size=(64, 64)) -> Path:
    """A synth workbook with `n` complete rows of noise images under root/imgs; returns its path."""
    from editforge.sheet.workbook import create_workbook

    rows = []
    for i in range(n):
        target = write_image(root / "imgs" / f"t{i}.png", seed=100 + i, size=size)
        refs = [write_image(root / "imgs" / f"r{i}_{k}.png", seed=200 + 10 * i + k, size=size) for k in range(controls)]
        cells = [p.relative_to(root).as_posix() for p in refs] + [None] * (3 - controls)
        rows.append([target.relative_to(root).as_posix(), *cells, f"gen {i}", False, f"make it shade {i}",
                     f"cat{i}", "done", None])
    return create_workbook(root / name, DATASET_HEADERS, rows)


# --- LoRA files -------------------------------------------------------------------------------------------------

WIDTH, RANK, ALPHA = 48, 4, 8.0  # tiny transformer: 3 heads x 16; alpha != rank, as in the real Lightning files
PROJECTIONS = ("to_q", "to_k", "to_v")
# Per layout: the down (A), up (B) and alpha key of layer {d} (`transformer_blocks.0.attn.to_q`; {k}: kohya's
# underscored name). diffusers' own files keep alpha in their metadata instead; bare A/B keys carry none.
LAYOUTS = {
    "lightning": ("{d}.lora_down.weight", "{d}.lora_up.weight", "{d}.alpha"),
    "comfy-down-up": ("diffusion_model.{d}.lora_down.weight", "diffusion_model.{d}.lora_up.weight",
                      "diffusion_model.{d}.alpha"),
    "comfy-A-B": ("diffusion_model.{d}.lora_A.weight", "diffusion_model.{d}.lora_B.weight",
                  "diffusion_model.{d}.alpha"),
    "diffusers": ("transformer.{d}.lora_A.weight", "transformer.{d}.lora_B.weight", None),
    "kohya": ("lora_unet_{k}.lora_down.weight", "lora_unet_{k}.lora_up.weight", "lora_unet_{k}.alpha"),
    "diffsynth": ("{d}.lora_A.default.weight", "{d}.lora_B.default.weight", "{d}.alpha"),
    "bare-A-B-no-alpha": ("{d}.lora_A.weight", "{d}.lora_B.weight", None),
}
LOADABLE = [name for name in LAYOUTS if name != "bare-A-B-no-alpha"]


def write_lora(path, layout: str, blocks=(0, 1), layers=()) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A LoRA on q/k/v of `blocks` (plus any dotted `layers`) in `layout`; returns {layer: (down, up)}."""
    gen = torch.Generator().manual_seed(11)
    down_key, up_key, alpha_key = LAYOUTS[layout]
    pairs, tensors = {}, {}
    for dotted in [f"transformer_blocks.{b}.attn.{p}" for b in blocks for p in PROJECTIONS] + list(layers):
        names = {"d": dotted, "k": dotted.replace(".", "_")}
        pairs[dotted] = torch.randn(RANK, WIDTH, generator=gen), torch.randn(WIDTH, RANK, generator=gen) * 0.5
        tensors[down_key.format(**names)], tensors[up_key.format(**names)] = pairs[dotted]
        if alpha_key:
            tensors[alpha_key.format(**names)] = torch.tensor(ALPHA)
    metadata = None
    if layout == "diffusers":  # what diffusers' save_lora_weights writes with the adapter's config
        config = {"r": RANK, "lora_alpha": ALPHA, "target_modules": sorted({d.rsplit(".", 1)[-1] for d in pairs})}
        adapter = json.dumps({f"transformer.{k}": v for k, v in config.items()})
        metadata = {"format": "pt", "lora_adapter_metadata": adapter}
    save_file(tensors, str(path), metadata=metadata)
    return pairs



# --- training samples -------------------------------------------------------------------------------------------


def write_samples(root: Path) -> list[dict]:
    """Three config samples (1 control, 2 controls, none) with their noise images written under `root`."""

    def img(name, w, h, seed):
        return str(write_image(root / name, seed, (w, h)))

    return [
        {"target": img("t0.png", 64, 32, 0), "controls": [img("c0.png", 64, 32, 1)], "instruction": "make the sky red"},
        {"target": img("t1.png", 64, 32, 2), "controls": [img("c1.png", 64, 32, 3), img("r1.png", 32, 32, 4)],
         "instruction": "put picture 2 in picture 1"},
        {"target": img("t2.png", 32, 32, 5), "instruction": "a cat"},
    ]



def train_tiny_transformer(steps: int, *, lora=None, on_prepared=None, after_step=None, **prepare):
    """`steps` optimizer steps of the tiny Edit-2509 transformer as `editforge train` makes them (prepare_model,
    accelerate, optimizer_step), gradient checkpointing on, on fixed random latents (a target and one control);
    `prepare`: more prepare_model arguments. `on_prepared(transformer, params)` runs before accelerator.prepare,
    `after_step()` after each step. Returns (transformer, LoRA parameters, losses)."""
    from types import SimpleNamespace

    from editforge.benchmark.train import tiny_transformer
    from editforge.models.registry import FAMILIES
    from editforge.train.config import LoraConfig, TrainConfig
    from editforge.train.step import make_accelerator, make_optimizer, optimizer_step, prepare_model

    torch.manual_seed(0)
    transformer = tiny_transformer(FAMILIES["qwen-image-edit-2509"], torch.float32)
    tc = TrainConfig(mixed_precision="no", learning_rate=1e-2)
    accelerator = make_accelerator(tc.mixed_precision)
    params = prepare_model(SimpleNamespace(transformer=transformer), lora or LoraConfig(rank=4, alpha=4),
                           quantize=prepare.pop("quantize", None),
                           gradient_checkpointing=prepare.pop("gradient_checkpointing", True), **prepare)
    if on_prepared:
        on_prepared(transformer, params)
    model, optimizer = accelerator.prepare(transformer, make_optimizer(params, tc))
    model.train()
    generator = torch.Generator().manual_seed(1)
    channels = transformer.config.in_channels // 4
    batch = {"target": torch.randn(1, channels, 4, 4, generator=generator),
             "controls": [torch.randn(1, channels, 4, 4, generator=generator)],
             "prompt_embeds": torch.randn(1, 7, transformer.config.joint_attention_dim, generator=generator),
             "prompt_mask": None}
    losses = []
    for _ in range(steps):
        micro_batch = (batch, torch.rand(1, generator=generator), torch.randn(batch["target"].shape, generator=generator))
        loss, _ = optimizer_step(accelerator, model, params, optimizer, [micro_batch], max_grad_norm=1.0)
        losses.append(float(loss))  # a host read per step: fine in a test
        if after_step:
            after_step()
    return transformer, params, losses


# --- the command line -------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free now on this machine (for `accelerate launch --main_process_port`): parallel test runs
    must not share a fixed one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE", re.IGNORECASE)


def accelerate_launch(*args: str, cwd: Path | None = None, env=None, timeout: float = 300,
                      attempts: int = 3) -> subprocess.CompletedProcess:
    """`accelerate launch --main_process_port <free port> ARGS`. A port free when chosen can be taken before the
    main process binds it (Ray and gloo of parallel tests open ports too): that launch is tried again on
    another port; any other failure is returned as it is."""
    for _ in range(attempts):
        result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--main_process_port",
                                 str(free_port()), *args], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode == 0 or not PORT_TAKEN.search(result.stderr):
            return result
    return result


def launch_failure(result: subprocess.CompletedProcess) -> str:
    """What a failed launch said: every process's error lines first (rank 0's are otherwise cut from the tail by
    the other ranks' reports of its death), then the tail."""
    errors = [line for line in result.stderr.splitlines() if "Error" in line or "[rank0]" in line]
    return "\n".join(errors[-40:]) + "\n---\n" + result.stdout[-2000:] + result.stderr[-3000:]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """`python -m editforge ARGS` in a real subprocess, as a user would run it."""
    import os

    return subprocess.run([sys.executable, "-m", "editforge", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=None if env is None else {**os.environ, **env})


def cli_in_process(monkeypatch, capsys, cwd, *args) -> tuple[int, str, str]:
    """`editforge ARGS` through the same entry point (`editforge.cli.main`), in this process: for checks that
    come before any model loads, where a subprocess would spend its seconds importing torch and diffusers.
    Returns (exit code, stdout, stderr)."""
    from editforge.cli import main

    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["editforge", *map(str, args)])
    capsys.readouterr()  # e.g. a tiny model's one-time build line
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# --- the review app ---------------------------------------------------------------------------------------------

class Served:
    """A review server on a free port, in a thread, on a synth-filled workbook in `folder/book`."""

    def __init__(self, folder: Path, *, page_size: int | None = None, **session_options):
        self.folder = folder / "book"
        self.path = make_workbook(self.folder, REVIEW_ROWS)
        run_synth(self.path, seed=7)
        from editforge.review.server import ReviewServer
        from editforge.review.session import ReviewSession

        self.session = ReviewSession(self.path, **session_options)
        self.server = ReviewServer(self.session, port=0, **({"page_size": page_size} if page_size else {}))
        self.port = urlsplit(self.server.url).port
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.server.started and time.monotonic() < deadline:
            time.sleep(0.01)

    def request(self, method: str, path: str, body=None, headers=None, *, token: bool = True) -> tuple[int, bytes]:
        """The path goes out byte for byte: no client-side `..` clean-up, unlike browsers and httpx.
        `token`: send the cookie a browser got from the printed address."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        as_json = body is not None and not isinstance(body, bytes)
        data = json.dumps(body).encode() if as_json else body
        sent = {"Content-Type": "application/json"} if as_json else {}
        if token:
            sent["Cookie"] = f"editforge_review_{self.port}={self.server.token}"
        conn.request(method, path, body=data, headers={**sent, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()

    def json(self, method: str, path: str, body=None) -> tuple[int, dict]:
        status, data = self.request(method, path, body)
        return status, json.loads(data)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)


# --- the judge --------------------------------------------------------------------------------------------------

def sharp_judge(judge):
    """`judge` with its head scaled up 60x: the tiny model's random weights answer ~0.49 for everything, where a
    bug that moves a score by 1e-4 hides; scaled, the scores of different pairs differ in the third decimal."""
    import copy

    from editforge.judge.model import Judge

    model = copy.deepcopy(judge.model)
    with torch.no_grad():
        model.lm_head.weight.mul_(60)
    return Judge(model, judge.processor, "sharp", judge.pixels)
