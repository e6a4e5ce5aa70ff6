"""Models and Lightning files from the hub: found in the cache offline, and a fast one-line error when they are
not there, before a workbook is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from editforge.models.registry import FAMILIES
from editforge.models.tiny import tiny_model_dir
from tests.helpers import make_workbook

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once


def synth(workbook: Path, *args: str, offline: bool) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = UNREACHABLE
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "editforge", "synth", str(workbook), *args],
                            env=env, capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - started


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def uncached_folder(tmp_path: Path) -> str:
    """A local pipeline without the tiny Lightning files beside it: its Lightning file is a hub file."""
    folder = tmp_path / "pipeline"
    shutil.copytree(tiny_model_dir("tiny-qwen-image-edit-2509"), folder, ignore=shutil.ignore_patterns("lightning"))
    return str(folder)


def assert_one_fast_line(stderr: str, seconds: float, needles: list[str]) -> None:
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    for needle in needles:
        assert needle in stderr, stderr
    assert "Retrying" not in stderr
    assert seconds < 20, seconds  # imports and a refused connection; huggingface_hub's retries alone take ~25 s


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_an_uncached_model_fails_fast_and_leaves_the_workbook_alone(tmp_path, offline):
    """As a user meets it: a real process with the environment variables set, timed."""
    book = make_workbook(tmp_path / "book")
    before = snapshot(tmp_path / "book")
    result, seconds = synth(book, "--model", "someone/uncached-finetune", "--seed", "1", offline=offline)
    assert result.returncode == 2
    assert_one_fast_line(result.stderr, seconds, [
        "--model someone/uncached-finetune is not in the local Hugging Face cache", "HF_HUB_OFFLINE=1",
        "--model FOLDER"])
    assert snapshot(tmp_path / "book") == before  # no new header, no .bak, no journal, no output folder


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-unreachable"])
@pytest.mark.parametrize("model, extra, needles", [
    ("qwen-image-edit-2509", [], ["--model Qwen/Qwen-Image-Edit-2509 is not in the local Hugging Face cache",
                                  "HF_HUB_OFFLINE=1", "--model FOLDER"]),
    ("FOLDER", ["--lightning", "8"], ["Lightning LoRA lightx2v/Qwen-Image-Lightning/", "HF_HUB_OFFLINE=1",
                                      "--lightning-path FILE"]),
])
def test_uncached_families_and_lightning_files_too(tmp_path, monkeypatch, capsys, offline, model, extra, needles, cli):
    """The same in this process (huggingface_hub's settings patched as its environment variables set them)."""
    from huggingface_hub import constants

    from editforge.models import hub

    model = uncached_folder(tmp_path) if model == "FOLDER" else model
    book = make_workbook(tmp_path / "book")
    before = snapshot(tmp_path / "book")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if not offline:
        monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE)
    hub.offline_reason.cache_clear()
    capsys.readouterr()  # the tiny model's one-time build line
    try:
        started = time.monotonic()
        code, _, err = cli("synth", book, "--model", model, "--seed", "1", *extra)
        seconds = time.monotonic() - started
    finally:
        hub.offline_reason.cache_clear()
    assert code == 2
    assert_one_fast_line(err, seconds, needles)
    assert snapshot(tmp_path / "book") == before


def test_a_cached_hub_model_loads_offline(tmp_path, monkeypatch):
    """The positive side: a hub id whose snapshot is in the Hugging Face cache loads with HF_HUB_OFFLINE=1."""
    import editforge

    repo = "someone/tiny-edit"
    cache = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(tiny_model_dir("tiny-qwen-image-edit-2509"), cache / "snapshots" / ("0" * 40),
                    ignore=shutil.ignore_patterns("lightning", "editforge.json"))
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("0" * 40)
    code = ("import editforge; p = editforge.load_pipeline('someone/tiny-edit', device='cpu'); "
            "from editforge.models.info import model_info; i = model_info(p); print(i.family.name, i.model)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [FAMILIES["qwen-image-edit-2509"].name, repo]
    assert editforge  # imported here only to share the session's tiny-model build


def test_the_hub_counts_as_reachable_when_it_answers_at_all(monkeypatch):
    """Any HTTP answer (here 501 from a server that knows no HEAD) means the hub is there: ask it; a refused
    connection means it is not: read the cache alone."""
    import http.server
    import threading

    from huggingface_hub import constants

    from editforge.models import hub

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        for endpoint, reachable in ((f"http://127.0.0.1:{server.server_address[1]}", True), (UNREACHABLE, False)):
            monkeypatch.setattr(constants, "ENDPOINT", endpoint)
            hub.offline_reason.cache_clear()
            assert (hub.offline_reason() is None) is reachable
    finally:
        server.shutdown()
        hub.offline_reason.cache_clear()
