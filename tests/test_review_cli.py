"""`editforge review` as a user starts it: a real process, a URL on stdout, Ctrl-C writes what is queued."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from editforge.sheet.workbook import open_workbook
from tests.helpers import REVIEW_ROWS, make_workbook, run_cli, run_synth


def test_serves_until_ctrl_c_and_writes_queued_verdicts_on_the_way_out(tmp_path):
    path = make_workbook(tmp_path, REVIEW_ROWS)
    run_synth(path, seed=7)
    proc = subprocess.Popen([sys.executable, "-m", "editforge", "review", str(path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("reviewing data.xlsx on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(" on ")[1].split()[0]
        root, token = url.split("?token=")
        with pytest.raises(urllib.error.HTTPError) as refused:  # without the token: nothing
            urllib.request.urlopen(root + "api/rows", timeout=10)
        assert refused.value.code == 403
        with urllib.request.urlopen(root + "api/rows?token=" + token, timeout=10) as response:
            rows = {r["row"]: r for r in json.load(response)["rows"]}
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"EditForge review" in response.read()
        request = urllib.request.Request(root + "api/rows/2/verdict?token=" + token, method="POST",
                                         data=json.dumps({"verdict": "rejected", "seen": rows[2]["images"]}).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()
        proc.send_signal(signal.SIGINT)  # at once: before the writer thread's own save is due
        proc.wait(timeout=20)
        assert proc.returncode == 130, proc.stderr.read()  # the shell's code for "ended by Ctrl-C"
        assert proc.stderr.read() == ""                      # and no traceback
    finally:
        if proc.poll() is None:
            proc.kill()
    assert open_workbook(path).get(2, "review") == "rejected"


def test_bad_arguments_are_one_line_errors(tmp_path):
    result = run_cli("review", tmp_path / "missing.xlsx")
    assert result.returncode == 2 and "workbook not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    path = make_workbook(tmp_path, REVIEW_ROWS[:1])
    result = run_cli("review", path, "--base-dir", tmp_path / "nowhere")
    assert result.returncode == 2 and "base dir not found" in result.stderr
    result = run_cli("review", path, "--columns", "oops")
    assert result.returncode == 2 and "key=Header" in result.stderr


def test_a_signal_uvicorn_swallowed_still_ends_in_keyboard_interrupt_after_the_writes(tmp_path, monkeypatch):
    """asyncio may end uvicorn's task before the signal uvicorn raises again reaches it (the CLI then exited 0,
    seen once under load): the server remembers the signal and raises it once the queued verdicts are written."""
    import uvicorn

    from editforge.review.server import ReviewServer
    from editforge.review.session import ReviewSession

    path = make_workbook(tmp_path, REVIEW_ROWS)
    run_synth(path, seed=7)
    server = ReviewServer(ReviewSession(path), port=0)
    row = server.session.view().row(2)
    server.session.verdict(2, "accepted", seen=row.images)

    def serve_then_swallow(self, sockets=None):
        self.handle_exit(signal.SIGINT, None)  # Ctrl-C: uvicorn shuts down gracefully ...
        # ... and its re-raised signal is lost: run() returns normally

    monkeypatch.setattr(uvicorn.Server, "run", serve_then_swallow)
    with pytest.raises(KeyboardInterrupt):
        server.run()
    assert open_workbook(path).get(2, "review") == "accepted"
