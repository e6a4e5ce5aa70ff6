"""synth on a real Ray cluster (local, 2 CPUs, started once for this module): the driver as the only writer,
workers killed mid-row, a row that kills every worker, the driver killed with kill -9, a review verdict
recorded during a run, and the same PNG bytes as a local run."""

from __future__ import annotations

import _thread
import functools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray

from editforge.progress import Progress
from editforge.sheet.fake import fake_generator
from editforge.sheet.journal import Journal, journal_path
from editforge.sheet.ray_engine import RayEngine
from editforge.sheet.synth import SynthOptions, synth
from editforge.sheet.workbook import open_workbook
from tests.helpers import FAKE_GENERATOR, ONE_OF_EACH, cell_paths, make_workbook, outputs

DELAY = 0.25  # seconds a fake picture takes: long enough to kill a worker or the driver mid-run
INPUTS = {"img/r0.png", "img/r1.png", "img\\r2.png"}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module: its address (for `editforge synth --ray ADDRESS`)."""
    previous = os.environ.get("EDITFORGE_FAKE_DELAY")
    os.environ["EDITFORGE_FAKE_DELAY"] = str(DELAY)  # the workers of a CLI run read it (they inherit this env)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if previous is None:
        del os.environ["EDITFORGE_FAKE_DELAY"]
    else:
        os.environ["EDITFORGE_FAKE_DELAY"] = previous


def rows_of(n: int) -> list[list]:
    return [ONE_OF_EACH[i % 3] for i in range(n)]


def assert_every_row_once(folder: Path, path: Path, rows: int) -> None:
    """Every row done once in the journal, one PNG per row on disk, each in the workbook, no orphan or temp."""
    assert [v["gen_status"] for _, v in open_workbook(path).rows()] == ["done"] * rows
    assert outputs(folder) == cell_paths(path) - INPUTS
    assert len(outputs(folder)) == rows
    with Journal.for_workbook(path) as journal:
        done = journal.results(status="done")
        assert len(done) == rows == len({r.identity for r in done}) == len({r.output for r in done})
        assert not journal.results(status="running")


def journaled_done(path: Path) -> int:
    try:
        return sqlite3.connect(journal_path(path)).execute(
            "SELECT COUNT(*) FROM results WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # no journal or table yet
        return 0


class Reviewer(Progress):
    """A review app's verdict, recorded through the journal (as the app does) while the run goes on; and the
    most rows out on workers at once, seen at each step of the progress bar."""

    def __init__(self, path: Path, row: int):
        self.path, self.row, self.recorded, self.most_out = path, row, False, 0

    def advance(self, n: int = 1, *, description: str | None = None) -> None:
        with Journal.for_workbook(self.path) as journal:
            self.most_out = max(self.most_out, len(journal.results(status="running")))
        if not self.recorded:
            book = open_workbook(self.path, read_only=True)
            with Journal.for_workbook(self.path) as journal:
                journal.record_change(book.sheet, book.row_id(self.row), {"review": "bad"}, row=self.row)
            self.recorded = True


def test_a_run_on_two_workers_fills_every_row_and_keeps_a_verdict_recorded_meanwhile(tmp_path, cluster):
    rows = 10
    path = make_workbook(tmp_path, rows=rows_of(rows))
    reviewer = Reviewer(path, row=2)
    summary = synth(path, functools.partial(fake_generator, 0.05), SynthOptions(seed=3, save_every_rows=1),
                    engine=RayEngine(workers=2), progress=reviewer)
    assert summary.line() == f"generated {rows}, skipped 0, failed 0"
    assert reviewer.recorded and summary.workers_line().startswith("per worker: ")
    assert 1 <= reviewer.most_out <= 2 * 2  # backpressure: at most two rows per worker are out
    assert len(summary.workers) == 2 and sum(summary.workers.values()) == rows  # both workers made pictures
    assert_every_row_once(tmp_path, path, rows)
    assert open_workbook(path).get(2, "review") == "bad"


def test_a_worker_killed_mid_row_has_its_rows_made_by_another(tmp_path, cluster):
    rows = 12
    path = make_workbook(tmp_path, rows=rows_of(rows))
    engine = RayEngine(workers=2)
    killed = []

    def kill_a_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(engine.worker_pids()) < 2 or journaled_done(path) < 2):
            time.sleep(0.02)
        killed.append(engine.worker_pids()[0])
        os.kill(killed[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    summary = synth(path, functools.partial(fake_generator, DELAY), SynthOptions(seed=3), engine=engine)
    killer.join()
    assert killed and summary.line() == f"generated {rows}, skipped 0, failed 0"
    assert engine.replaced == 1 and sum(engine.deaths.values()) == 1  # it died making a row, which was redone
    assert_every_row_once(tmp_path, path, rows)


def test_a_row_that_kills_its_workers_fails_with_the_reason_instead_of_looping(tmp_path, cluster):
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[0], [None, "img/r1.png", None, None, "poison", "t", True],
                                         ONE_OF_EACH[2]])

    def make_poisoned():  # pickled by value: the workers run it
        good = fake_generator()

        def generate(images, prompt, seed):
            if prompt == "poison":
                os.kill(os.getpid(), signal.SIGKILL)
            return good(images, prompt, seed)
        return generate

    engine = RayEngine(workers=2, max_deaths=2)
    watchdog = threading.Timer(60, _thread.interrupt_main)  # a row killing workers forever: Ctrl-C, not a hang
    watchdog.start()
    try:
        summary = synth(path, make_poisoned, SynthOptions(seed=3), engine=engine)
    finally:
        watchdog.cancel()
    assert not summary.interrupted and (summary.generated, summary.failed) == (2, 1)
    assert summary.failures[0][0] == 3 and summary.failures[0][1].startswith("a worker died 2 times making this row")
    # Two deaths are the poison row's; a third worker can go when a row's result was still on its way to the driver
    # as the poison killed its worker: that row looks unfinished, takes the blame and is made again (its result is
    # the same), and the poison row kills once more. Ray does not tell the two apart.
    assert engine.replaced in (2, 3), engine.replaced
    assert open_workbook(path).get(3, "gen_status").startswith("failed: a worker died")


def test_a_worker_that_cannot_load_the_model_stops_the_run_with_its_error(tmp_path, cluster):
    from editforge.errors import EditForgeError

    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:2])

    def make_unloadable():
        raise EditForgeError("model qwen-x is not in this machine's Hugging Face cache")

    with pytest.raises(EditForgeError) as error:
        synth(path, make_unloadable, SynthOptions(seed=3), engine=RayEngine(workers=2))
    assert str(error.value) == "a Ray worker could not load the model: model qwen-x is not in this machine's " \
                               "Hugging Face cache"
    with Journal.for_workbook(path) as journal:  # no row went out: the next run makes them all
        assert outputs(tmp_path) == set() and journal.results() == []


def editforge(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "editforge", "synth", *map(str, args)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_driver_killed_with_kill_9_then_run_again_finishes_without_duplicates(tmp_path, cluster):
    rows = 16
    path = make_workbook(tmp_path, rows=rows_of(rows))
    # no save before the kill: every row done by then is in the journal only, and must not be made again
    command = [path, "--seed", "9", "--save-every", "1000", "--save-interval", "1000", "--ray", cluster, "--workers", "2"]
    first = editforge(*command, env=FAKE_GENERATOR)
    deadline = time.monotonic() + 90
    while journaled_done(path) < 3 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    _, err = first.communicate()
    done = journaled_done(path)
    assert first.returncode == -signal.SIGKILL and 3 <= done < rows, err[-2000:]
    second = editforge(*command, env=FAKE_GENERATOR)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    assert out.startswith(f"generated {rows - done}, skipped 0, failed 0 (+{done} recovered from an interrupted run)")
    assert "per worker: " in err
    assert_every_row_once(tmp_path, path, rows)


def test_the_same_seed_gives_the_same_png_bytes_locally_and_on_ray(tmp_path, cluster, tiny_edit_plus):
    from editforge.inference.generator import PipelineGenerator
    from editforge.inference.options import GenerationOptions
    from editforge.models.options import LoadOptions
    from editforge.sheet.launch import synth_with_model

    generation = GenerationOptions(steps=2, max_pixels=4096, condition_pixels=3136)
    runs = {}
    for where in ("local", "ray"):
        path = make_workbook(tmp_path / where, rows=ONE_OF_EACH[:3])  # the same file name: the same PNG metadata
        if where == "local":  # the session's tiny model, loaded in this process
            summary = synth(path, lambda: PipelineGenerator(tiny_edit_plus, generation), SynthOptions(seed=11))
        else:  # one worker loads it from the model's name, as on a cluster
            summary = synth_with_model(path, "tiny-qwen-image-edit-2509", SynthOptions(seed=11), load=LoadOptions(),
                                       generation=generation, engine=RayEngine(workers=1))
        assert summary.line() == "generated 3, skipped 0, failed 0"
        book = open_workbook(path)
        runs[where] = [(path.parent / book.get(2, "ref_image_1")).read_bytes(),
                       (path.parent / book.get(3, "raw_image")).read_bytes(),
                       (path.parent / book.get(4, "ref_image_2")).read_bytes()]
    assert runs["local"] == runs["ray"]
    assert len(set(runs["local"])) == 3


def test_ray_options_the_cluster_cannot_serve_are_one_line(tmp_path, cluster, cli, monkeypatch):
    path = make_workbook(tmp_path)
    code, _, err = cli("synth", path, "--ray", cluster, "--device", "cpu")  # refused before any model is looked for
    assert code == 2 and err.strip() == "error: with --ray each worker uses the GPU Ray gives it; drop --device"
    for name, value in FAKE_GENERATOR.items():
        monkeypatch.setenv(name, value)
    code, _, err = cli("synth", path, "--ray", cluster, "--workers", "5")
    assert code == 2 and err.strip() == "error: the Ray cluster has 2 CPUs and no GPU; --workers 5 needs 5 CPUs"
    code, _, err = cli("synth", path, "--ray", "127.0.0.1:1")  # nothing there: at once, not after minutes of retries
    assert code == 2 and err.strip() == "error: no Ray cluster answers at 127.0.0.1:1; start one there with " \
                                        "`ray start --head`, or use --ray local"
    code, _, err = cli("synth", path, "--workers", "2")
    assert code == 2 and err.strip() == "error: --workers is the number of Ray workers; add --ray local|auto|ADDRESS"
    assert not journal_path(path).exists()


def test_on_a_gpu_cluster_a_worker_takes_its_gpus(cluster, monkeypatch):
    """No GPU here: the cluster's resources are forced to 8 GPUs to see what the workers would ask Ray for."""
    from editforge.errors import EditForgeError

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})
    engine = RayEngine("auto", gpus_per_worker=2)
    engine.connect()
    assert (engine.workers, engine.resources) == (4, {"num_gpus": 2, "num_cpus": 1})
    assert engine.describe() == "4 Ray workers, 2 GPUs each"
    with pytest.raises(EditForgeError, match=r"^the Ray cluster has 8 GPUs; `workers` 5 needs 5 x 2 GPUs$"):
        RayEngine("auto", workers=5, gpus_per_worker=2).connect()


def test_a_dead_workers_finished_requests_keep_their_results_and_the_first_unfinished_is_blamed(monkeypatch):
    """`ray.wait` can report a worker's death before a result it made earlier: that result is kept (not made
    again), and the death counts against the first request the worker had not finished. No cluster: the order of
    events is set by hand, so the race happens on every run."""
    from collections import deque

    from editforge.sheet import ray_engine
    from editforge.sheet.engine import Outcome, Request

    requests = {ref: Request(key=key, inputs=(), prompt="p", seed=key, retries=0)
                for key, ref in enumerate(("made", "in hand", "waiting"), start=1)}
    finished = {"made": Outcome("done", 1, png=b"png")}
    monkeypatch.setattr(ray_engine, "_made", lambda ref, request: finished.get(ref))
    engine = RayEngine("local", max_deaths=2)
    monkeypatch.setattr(engine, "_spawn", lambda: ray_engine._Slot(actor="new", ready=None))
    slot = ray_engine._Slot(actor="old", ready=None, queue=deque(requests))
    engine._slots = [slot]
    sent = {ref: (slot, request) for ref, request in requests.items()}
    again: deque = deque()

    results = list(engine._lost(slot, RuntimeError("worker died"), sent, again))
    assert results == [(requests["made"], finished["made"])]
    assert [r.key for r in again] == [2, 3] and engine.deaths == {2: 1} and engine.replaced == 1
    assert not sent and [s.actor for s in engine._slots] == ["new"]
    # the same row in hand when a second worker dies: failed with the reason, not sent again
    slot = ray_engine._Slot(actor="new", ready=None, queue=deque(["again"]))
    engine._slots = [slot]
    results = list(engine._lost(slot, RuntimeError("worker died"), {"again": (slot, again[0])}, deque()))
    assert [(r.key, o.status, o.failure) for r, o in results] == [(2, "failed", "error")]
    assert "a worker died 2 times making this row" in results[0][1].error
