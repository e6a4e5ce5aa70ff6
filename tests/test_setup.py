"""scripts/install-torch.sh, the part of setup that decides which PyTorch a fresh clone gets: the CPU build from
PyTorch's index, a quick fallback where only a package mirror is reachable, and a torch already there kept.

pip and torch are stand-ins here (a `pip` module that records its arguments, a `torch` that fails to import),
so the decision is tested without downloading anything; `.ci/run` checks the real install on a fresh clone."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-torch.sh"


@pytest.fixture
def stand_ins(tmp_path):
    """Folders that, first on PYTHONPATH, make `python -m pip` log its arguments (pip/) and `import torch` fail
    (no-torch/)."""
    (tmp_path / "pip" / "pip").mkdir(parents=True)
    (tmp_path / "pip" / "pip" / "__init__.py").write_text("")
    (tmp_path / "pip" / "pip" / "__main__.py").write_text(
        "import json, os, sys\n"
        "with open(os.environ['PIP_LOG'], 'a') as fh:\n"
        "    fh.write(json.dumps(sys.argv[1:]) + '\\n')\n")
    (tmp_path / "no-torch").mkdir()
    (tmp_path / "no-torch" / "torch.py").write_text("raise ImportError('no torch in this test')\n")
    return tmp_path


def install(stand_ins: Path, index: str, *, torch_present: bool = False) -> tuple[list[list[str]], str, float]:
    log = stand_ins / "pip.log"
    first = [str(stand_ins / "pip")] + ([] if torch_present else [str(stand_ins / "no-torch")])
    env = {**os.environ, "PIP_LOG": str(log), "EDITFORGE_TORCH_CPU_INDEX": index,
           "PYTHONPATH": os.pathsep.join([*first, os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPT), sys.executable], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return calls, result.stderr, time.monotonic() - started


def test_the_cpu_build_comes_from_pytorchs_index(stand_ins, tmp_path):
    (tmp_path / "web" / "whl" / "cpu" / "torch").mkdir(parents=True)
    (tmp_path / "web" / "whl" / "cpu" / "torch" / "index.html").write_text("<a>torch-2.13.0+cpu</a>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "web"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    try:
        calls, _, _ = install(stand_ins, index)
    finally:
        server.shutdown()
    assert calls == [["install", "--quiet", "--disable-pip-version-check", "--index-url", index,
                      "--extra-index-url", "https://pypi.org/simple", "torch==2.13.0+cpu"]]


def test_an_unreachable_index_falls_back_at_once(stand_ins):
    # the discard port refuses the connection; a DNS failure (download.pytorch.org behind a mirror) is as quick
    calls, stderr, seconds = install(stand_ins, "http://127.0.0.1:9/whl/cpu")
    assert calls == [["install", "--quiet", "--disable-pip-version-check", "torch==2.13.0"]]
    assert "cannot be reached" in stderr and seconds < 10, seconds


def test_a_torch_already_there_is_kept(stand_ins):
    calls, _, _ = install(stand_ins, "http://127.0.0.1:9/whl/cpu", torch_present=True)
    assert calls == []
