"""Every file of the hostile corpus (tests/hostile.py), through the CLI as a user runs it: one line and a
non-zero exit, or the bad row reported with its reason; never a traceback, never gigabytes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.hostile import CASES

FAKE = {"EDITFORGE_SYNTH_GENERATOR": "editforge.sheet.fake:make_generator"}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, tmp_path):
    case = CASES[name]
    folder = tmp_path / "case"
    folder.mkdir()
    args = case.build(folder)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "editforge", *map(str, args)], capture_output=True, text=True,
                            timeout=600, env={**os.environ, **(FAKE if case.fake_generator else {})})
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert "Traceback" not in output and result.returncode != 0, output[-3000:]
    if case.expect == "error":
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and (case.after_load or len(lines) == 1), result.stderr[-3000:]
        assert lines[-1].startswith("error: ") and re.search(case.message, lines[-1]), lines[-1]
    else:  # the run went on; rich wraps long lines on a pipe, so compare with the breaks undone
        assert re.search(case.message, " ".join(output.split())), output[-3000:]
    if case.max_seconds is not None:
        assert elapsed < case.max_seconds, f"{elapsed:.1f} s"
