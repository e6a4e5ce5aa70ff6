"""`editforge synth` as a user runs it: bad input, kill -9 and resume, two processes, the tiny model."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import openpyxl
import pytest

from editforge.sheet.journal import Journal, journal_path
from editforge.sheet.workbook import create_workbook, open_workbook
from tests.helpers import (FAKE_GENERATOR, ONE_OF_EACH, accelerate_launch, cell_paths, launch_failure, make_workbook,
                           outputs)

FAKE = FAKE_GENERATOR
INPUTS = {"img/r0.png", "img/r1.png", "img\\r2.png"}


def editforge(*args, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "editforge", "synth", *map(str, args)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def assert_complete(folder: Path, path: Path, rows: int) -> None:
    """Every need_gen row generated exactly once, nothing unreferenced, the workbook whole."""
    values = [v for _, v in open_workbook(path).rows()]
    assert [v["gen_status"] for v in values] == ["done"] * rows
    assert outputs(folder) == cell_paths(path) - INPUTS  # no orphans, no temp files
    with Journal.for_workbook(path) as journal:
        done = journal.results(status="done")
        assert len(done) == rows == len({r.identity for r in done})
        assert not journal.results(status="running")


@pytest.mark.parametrize("make, extra, message", [
    (lambda d: (d / "x.xlsx").write_bytes(b"garbage") and d / "x.xlsx", [], "not a readable .xlsx workbook"),
    (lambda d: create_workbook(d / "x.xlsx", ["raw_image"], []), ["--sheet", "nope"], "no sheet 'nope'"),
    (lambda d: (d / "x.csv").write_text("\n\n") and d / "x.csv", [], "no header row"),
    (lambda d: make_workbook(d), ["--columns", "prompt"], "--columns wants key=Header"),
])
def test_bad_workbooks_exit_2_with_one_line(tmp_path, make, extra, message, cli):
    code, out, err = cli("synth", make(tmp_path), *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("model, args, message", [
    ("tiny-qwen-image-edit-2509", ["--device", "cuda:99"], "--device cuda:99"),
    ("tiny-qwen-image-edit-2509", ["--lightning", "off", "--steps", "1"], "needs at least 2 steps"),
    ("tiny-qwen-image-edit-2509", ["--max-pixels", "1024"], "--max-pixels is an area in pixels"),
    ("tiny-qwen-image-edit-2509", ["--dtype", "fp16"], "'--dtype': 'fp16' is not one of 'bf16', 'fp32'"),
    ("tiny-qwen-image", [], "synth needs an edit model"),
])
def test_request_errors_stop_before_the_model_loads_and_the_workbook_is_touched(tmp_path, capsys, unloadable, model, args, message, cli):
    path, model = make_workbook(tmp_path), unloadable(model)
    before = sorted(p for p in tmp_path.rglob("*") if "unloadable" not in str(p))
    capsys.readouterr()  # the tiny model's one-time build line
    code, _, err = cli("synth", path, "--model", model, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p for p in tmp_path.rglob("*") if "unloadable" not in str(p)) == before


def test_rows_with_more_inputs_than_the_model_takes_fail_before_it_loads(tmp_path, unloadable, cli):
    """Edit v1 takes one image: a refs-only row with two refs fails with its reason; no row is left to
    generate, so the (unloadable) model is never loaded."""
    path = make_workbook(tmp_path, rows=[[None, "img/r0.png", "img/r1.png", None, "join them", "t", True]])
    model = unloadable("tiny-qwen-image-edit")
    code, out, err = cli("synth", path, "--model", model, "--seed", "1")
    assert code == 1 and out.strip() == "generated 0, skipped 0, failed 1", err
    assert "row 2: 2 input images; the model takes at most 1" in err


def test_workbook_open_in_excel_exits_2_and_writes_nothing(tmp_path, cli):
    path = make_workbook(tmp_path)
    (tmp_path / "~$data.xlsx").write_text("")
    before = sorted(tmp_path.iterdir())
    code, _, err = cli("synth", path)
    assert code == 2 and "open in Excel" in err and sorted(tmp_path.iterdir()) == before


def test_dry_run_and_a_run_with_failures(tmp_path, monkeypatch, cli):
    path = make_workbook(tmp_path)
    monkeypatch.setenv("EDITFORGE_SYNTH_GENERATOR", FAKE["EDITFORGE_SYNTH_GENERATOR"])
    code, out, _ = cli("synth", path, "--dry-run")
    assert code == 0 and "gen_extra_ref  1" in out and not journal_path(path).exists()
    code, out, err = cli("synth", path, "--seed", "3")
    assert code == 1 and out.strip() == "generated 3, skipped 1, failed 1"
    assert "row 6: raw_image: file not found" in err


def crashing_generator():
    """The fake generator, except that the prompt `crash` crashes the pipeline (a row's failure mid-run)."""
    from editforge.sheet.fake import fake_generator

    fake = fake_generator()

    def generate(images, prompt, seed):
        if prompt == "crash":
            raise RuntimeError("the pipeline fell over")
        return fake(images, prompt, seed)
    return generate


def test_failures_are_listed_in_row_order(tmp_path, monkeypatch, cli):
    """A row that fails while generating (row 2) and one that fails in planning (row 3, a missing input)."""
    path = make_workbook(tmp_path, rows=[["img/r0.png", None, None, None, "crash", "t", True],
                                         ["img/nope.png", None, None, None, "missing input", "t", True],
                                         ["img/r1.png", None, None, None, "crash", "t", True]])
    monkeypatch.setenv("EDITFORGE_SYNTH_GENERATOR", "tests.test_synth_cli:crashing_generator")
    code, out, err = cli("synth", path, "--seed", "1")
    assert code == 1 and out.strip() == "generated 0, skipped 0, failed 3"
    failed = [line.split(":")[0] for line in err.splitlines() if line.startswith("failed")]
    assert failed == ["failed row 2", "failed row 3", "failed row 4"], err


def test_the_first_line_says_where_the_seed_came_from(tmp_path, monkeypatch, cli):
    path = make_workbook(tmp_path, rows=[["img/r0.png", None, None, None, "a reference", "t", True]] * 2)
    monkeypatch.setenv("EDITFORGE_SYNTH_GENERATOR", FAKE["EDITFORGE_SYNTH_GENERATOR"])
    code, _, err = cli("synth", path, "--seed", "1", "--max-rows", "1")
    assert code == 0 and "seed 1\n" in err and "random" not in err
    code, _, err = cli("synth", path)  # resumed without --seed: the remembered one, not a random one
    assert code == 0 and "seed 1 (this workbook's seed, remembered in its journal)" in err, err
    other = make_workbook(tmp_path / "other", rows=[["img/r0.png", None, None, None, "a reference", "t", True]])
    code, _, err = cli("synth", other)
    assert code == 0 and "(random; --seed " in err and "reproduces it)" in err


def test_a_misspelt_columns_header_is_named(tmp_path, cli):
    code, _, err = cli("synth", make_workbook(tmp_path), "--columns", "gen_edit_prompt=Promt", "--dry-run")
    assert code == 2 and "--columns gen_edit_prompt=Promt: no header 'Promt' in row 1 of data.xlsx" in err, err
    assert "its headers: raw_image, ref_image_1" in err


def test_kill_9_mid_run_then_resume(tmp_path):
    rows = 16
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[i % 3] for i in range(rows)])
    first = editforge(path, "--seed", "9", "--save-every", "3", env={**FAKE, "EDITFORGE_FAKE_DELAY": "0.12"})
    deadline = time.monotonic() + 60
    done = 0
    while done < 4 and time.monotonic() < deadline:  # kill once a few rows are journaled
        time.sleep(0.05)
        if journal_path(path).exists():
            try:
                done = sqlite3.connect(journal_path(path)).execute(
                    "SELECT COUNT(*) FROM results WHERE status = 'done'").fetchone()[0]
            except sqlite3.OperationalError:  # table not created yet
                pass
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL and 4 <= done < rows
    second = editforge(path, "--seed", "9", env=FAKE)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    generated = int(out.split()[1].rstrip(","))
    assert done <= rows - generated  # journaled rows were not made again
    assert_complete(tmp_path, path, rows)


def test_two_processes_share_the_rows(tmp_path):
    rows = 12
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[i % 3] for i in range(rows)])
    launch = accelerate_launch(
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
        "no", "-m", "editforge", "synth", str(path), "--seed", "4",
        env={**os.environ, **FAKE, "EDITFORGE_FAKE_DELAY": "0.05"}, timeout=120)
    assert launch.returncode == 0, launch_failure(launch)
    assert launch.stdout.count("generated 12, skipped 0, failed 0") == 1  # one summary, from the main process
    assert_complete(tmp_path, path, rows)
    with Journal.for_workbook(path) as journal:
        assert sorted(journal.db.execute("SELECT worker, COUNT(*) FROM results GROUP BY worker")) == [(0, 6), (1, 6)]


def test_tiny_model_end_to_end(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:2])
    run = subprocess.run(
        [sys.executable, "-m", "editforge", "synth", str(path), "--model", "tiny-qwen-image-edit-2509",
         "--lightning", "off", "--steps", "2", "--max-pixels", "4096", "--condition-pixels", "3136", "--seed", "1"],
        capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "generated 2, skipped 0, failed 0"
    assert_complete(tmp_path, path, 2)


def test_edits_saved_while_synth_runs_survive(tmp_path):
    """A person edits and saves the workbook (openpyxl, in place) while a real synth process fills it and
    saves after every row: their cells win, everything else is filled, a row they rewrote is redone."""
    rows = 16
    path = make_workbook(tmp_path, rows=[[f"img/r{i % 3}.png", None, None, None, f"make {i}", "t", True]
                                         for i in range(rows)])
    synth = editforge(path, "--seed", "5", "--save-every", "1", env={**FAKE, "EDITFORGE_FAKE_DELAY": "0.15"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and open_workbook(path).get(3, "gen_status") != "done":
            time.sleep(0.05)  # wait until synth has saved a few rows
        wb = openpyxl.load_workbook(path)
        ws = wb.active
        ws["F2"] = "a note on a finished row"
        ws.cell(rows + 1, 5).value = "the last row, rewritten"  # not generated yet
        ws.insert_rows(2)
        ws["A2"], ws["E2"], ws["F2"] = "img/r1.png", "inserted by hand", "keep me"
        wb.save(path)
        assert synth.poll() is None, "synth ended before the edit: the test proves nothing"
        out, err = synth.communicate(timeout=120)
    finally:
        synth.kill() if synth.poll() is None else None
    assert synth.returncode == 0, err
    book = dict(open_workbook(path).rows())
    assert (book[2]["gen_edit_prompt"], book[2]["instruction"], book[2]["ref_image_1"]) == (
        "inserted by hand", "keep me", None)
    assert book[3]["instruction"] == "a note on a finished row" and book[3]["gen_status"] == "done"
    assert [book[r]["gen_status"] for r in range(3, rows + 1)] == ["done"] * (rows - 2)
    last = book[rows + 2]
    assert (last["gen_edit_prompt"], last["ref_image_1"], last["need_gen"]) == ("the last row, rewritten", None, True)
    again = editforge(path, "--seed", "5", env=FAKE)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0 and out.startswith("generated 1,"), err  # the rewritten row, with its new prompt
    assert outputs(tmp_path) == cell_paths(path) - {"img/r0.png", "img/r1.png", "img/r2.png"}  # stale one gone


def test_a_symlink_to_the_workbook_is_the_same_workbook(tmp_path):
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[i % 3] for i in range(6)])
    alias = tmp_path / "alias.xlsx"
    alias.symlink_to(path.name)
    hold = tmp_path / "hold"  # the first run makes no picture while this exists: it runs as long as needed
    hold.touch()
    first = editforge(path, "--seed", "1", env={**FAKE, "EDITFORGE_FAKE_HOLD": str(hold)})
    try:
        deadline = time.monotonic() + 60
        while not journal_path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = editforge(alias, "--seed", "1", env=FAKE)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2 and "another `editforge synth` is running on data.xlsx" in err
        assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
        hold.unlink()
        first.communicate(timeout=60)
    finally:
        first.kill() if first.poll() is None else None
    done = editforge(alias, "--seed", "1", env=FAKE)  # through the link: the same journal, nothing to do
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0 and out.startswith("generated 0,"), err
    assert alias.is_symlink() and not journal_path(alias).exists()
    assert_complete(tmp_path, path, 6)


def test_temp_files_of_killed_saves_are_removed_those_of_live_processes_kept(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:1])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = [tmp_path / f".data.xlsx.tmp-{dead.pid}", tmp_path / f".data.xlsx.bak-{dead.pid}",
                     tmp_path / "generated" / "ref" / f".x.png.tmp-{dead.pid}"]
        in_progress = tmp_path / f".data.xlsx.tmp-{alive.pid}"
        for leftover in [*leftovers, in_progress]:
            leftover.parent.mkdir(parents=True, exist_ok=True)
            leftover.write_bytes(b"half a file")
        code = editforge(path, "--seed", "1", env=FAKE).wait(timeout=60)
        assert code == 0 and not any(p.exists() for p in leftovers) and in_progress.exists()
    finally:
        alive.kill()
