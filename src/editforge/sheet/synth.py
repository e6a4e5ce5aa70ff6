"""The `editforge synth` run: plan the workbook, generate the missing pictures, journal, render.

    summary = synth("data.xlsx", make_generator, SynthOptions(seed=7), team=Team(), progress=Progress())

(`editforge.sheet.launch.synth_with_model` is synth as the command runs it: with a model, on one process,
an `accelerate launch` team or a Ray cluster.)

`make_generator()` is called once, only when this process has rows to do (on Ray: once in each worker),
and returns a callable `(images, prompt, seed) -> (image, params)`; the model lives behind it, so synth
knows nothing of torch beyond recognising an out-of-memory error. A generator may also have `check(images, prompt)`,
raising `EditForgeError` for input the model cannot take (a prompt too long for its tokenizer, an
aspect ratio it cannot encode): it runs before any model work, and fails only that row. With `judge`, the
generator's `judge()` (the pipeline's own text encoder, `editforge.judge`) scores the row's pair once its
picture is made, as `editforge judge` would (`editforge.judge.workbook`); below `judge_min` the picture is
made again with the next seed, like one the quality gate refuses.

Where the model runs is the engine's business (`editforge.sheet.engine`): this process (`LocalEngine`, the
default) or the workers of a Ray cluster (`editforge.sheet.ray_engine.RayEngine`). Either way this process
does everything else, and is the only one writing the journal, the workbook and the PNGs: it journals a row,
reads its input files into a `Request`, and writes the PNG bytes of the engine's `Outcome`. An engine takes
requests as fast as it can work on them (Ray: a few per worker), so rows are journaled as they go out.

Crash safety, step by step for one row: the journal reserves the output name (`running`), the image
goes to a temp name and is renamed (write_png_atomic), the journal says `done`. A kill at any point
leaves at worst a `running` entry, whose file the next run deletes before regenerating the row with
the same seed, and temp files, which the next run deletes once their process is gone. Only the main
process writes the workbook, from the journal, every `save_every_rows` rows or `save_every_seconds`
seconds (never more often than 10x the time a save takes, so a 100,000-row workbook does not spend the
run saving) and at exit, Ctrl-C and SIGTERM included; each save writes into the file as it is on disk
then, so a person's edits made meanwhile survive (`editforge.sheet.render.SheetWriter`).

Failures: a row whose own input fails (unreadable picture, a check of the generator, the quality
gate) fails alone. Crashes of the generator and out-of-memory errors look systemic: ten in a row stop
the run. A row that failed is not tried again by later runs until its inputs change, or with
`retry_failed`; a row whose run was killed is.

Several processes (accelerate) share the rows: each computes the same plan, takes every n-th job, and
journals its results; the main process renders them all.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from editforge.errors import EditForgeError
from editforge.files import remove_stale_temps
from editforge.inference.metadata import write_png_atomic
from editforge.paths import BadPath, PathPolicy
from editforge.progress import Progress
from editforge.sheet.engine import NEW, Engine, Generator, JudgeTask, LocalEngine, Outcome, Request
from editforge.sheet.journal import Journal, RecalledFormulas, Result
from editforge.sheet.plan import Job, Plan, RowIssue, check_columns, plan_workbook
from editforge.sheet.render import RenderLock, RenderStats, SheetWriter
from editforge.sheet.schema import GEN_SEED, GEN_STATUS, RAW_IMAGE
from editforge.sheet.seeds import random_base_seed, row_seed
from editforge.sheet.team import Team
from editforge.sheet.workbook import Workbook, ensure_not_locked, open_workbook, workbook_file

MAX_CONSECUTIVE_ERRORS = 10  # a generator that crashes this often in a row is broken, not unlucky


@dataclass
class SynthOptions:
    sheet: str | None = None
    base_dir: Path | None = None          # default: the workbook's folder
    columns: Mapping[str, str] | None = None
    out_raw: str = "generated/raw"
    out_ref: str = "generated/ref"
    seed: int | None = None               # default: the journal's, or a new random one
    max_rows: int | None = None
    retries: int = 2
    allow_outside: bool = False
    retry_failed: bool = False            # try rows that failed in an earlier run although nothing changed
    save_every_rows: int = 100
    save_every_seconds: float = 60.0
    max_inputs: int | None = None         # input images the model takes; rows with more fail before it loads
    judge: bool = False                   # score each new pair with the generator's judge (judge_score)
    judge_min: float | None = None        # a pair scoring below this is made again with the next seed (retries)


@dataclass
class Summary:
    generated: int = 0
    skipped: int = 0
    failed: int = 0
    recovered: int = 0               # finished by an interrupted run, rendered by this one
    failed_before: int = 0           # failed in an earlier run, inputs unchanged: not tried again
    stale: int = 0                   # made, but the person changed the row meanwhile: not written
    base_seed: int | None = None
    interrupted: bool = False
    failures: list[tuple[int, str]] = field(default_factory=list)  # (row, reason), in row order
    workers: Counter[str] = field(default_factory=Counter)  # rows generated by each worker process ("host pid N")
    notes: list[str] = field(default_factory=list)  # one line each: held changes, a save that failed
    main: bool = True  # the team's main process: the one that reports (the others' summaries are partial)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed or self.failed_before else 0)

    def line(self) -> str:
        text = f"generated {self.generated}, skipped {self.skipped}, failed {self.failed}"
        if self.failed_before:
            text += f" (+{self.failed_before} failed in an earlier run, not retried: `retry_failed=True`)"
        if self.recovered:
            text += f" (+{self.recovered} recovered from an interrupted run)"
        if self.stale:
            text += f" ({self.stale} not written: their rows changed meanwhile; the next run redoes them)"
        return text + (" — interrupted" if self.interrupted else "")

    def workers_line(self) -> str | None:
        """Rows generated per worker, when more than one process made them (a Ray cluster)."""
        if len(self.workers) < 2:
            return None
        return "per worker: " + ", ".join(f"{name}: {count}" for name, count in sorted(self.workers.items()))


@dataclass(frozen=True)
class Todo:
    job: Job
    generation: int


def synth(workbook: str | Path, make_generator: Callable[[], Generator], options: SynthOptions, *,
          team: Team = Team(), progress: Progress | None = None, engine: Engine | None = None) -> Summary:
    """Generate the picture of every row that needs one; `progress` (the main process's) shows the run.
    `engine` calls `make_generator` and makes the pictures: `LocalEngine()` (default) in this process, or
    a `RayEngine` on its workers."""
    progress = progress if progress is not None and team.is_main else Progress()
    path = workbook_file(workbook)  # a symlink is followed: one lock, one journal, one file per workbook
    policy = PathPolicy(options.base_dir or path.parent, allow_outside=options.allow_outside)
    out_dirs = {"raw": _out_dir(policy, options.out_raw), "ref": _out_dir(policy, options.out_ref)}
    lock = RenderLock(path)
    if team.is_main:
        ensure_not_locked(workbook, path)
        if not acquire_within(lock, LOCK_WAIT_SECONDS):
            raise EditForgeError(f"another `editforge synth` is running on {path.name}; wait for it to finish")
    try:
        with Journal.for_workbook(path) as journal:
            writer = None
            if team.is_main:
                for folder in (path.parent, *out_dirs.values()):  # saves and PNGs a killed run left half-done
                    remove_stale_temps(folder)
                statuses = _PlanStatuses()
                writer = SheetWriter(workbook, journal, policy, sheet=options.sheet, columns=options.columns,
                                     statuses=statuses)
                # The first write: row ids for rows without one, and changes queued while no run could
                # write them (a review app's regenerations), so this run already redoes those rows. Not
                # while a killed run's results wait to be rendered: only a run's own renders, after its
                # reconcile, order those against the changes.
                waiting = journal.results(sheet=writer.book.sheet, status="done", rendered=False)
                writer.render(results=False, changes=not waiting)
                book = writer.book
                plan = plan_workbook(book, policy)
                journal.rekey_legacy_results(book.sheet, {j.legacy_identity: (j.identity, j.row_id) for j in plan.jobs})
            team.share(None)  # the others read the workbook once the main process has written into it
            if not team.is_main:
                book = open_workbook(path, sheet=options.sheet, columns=options.columns, read_only=True,
                                     memory=journal)
                plan = plan_workbook(book, policy)
            _refuse_too_many_inputs(plan, options.max_inputs)
            # Every process derives the same to-do list before anyone generates: reconcile (below)
            # changes nothing it depends on, and nobody journals a result until the barrier.
            todo, recovered, held_back = _todo(plan, journal.latest_by_identity(book.sheet), options.retry_failed)
            todo = todo[: options.max_rows] if options.max_rows is not None else todo
            shared = None
            if team.is_main:
                base_seed, how = _base_seed(journal, options.seed)
                shared = (uuid.uuid4().hex, base_seed)
                _reconcile(journal, book.sheet, plan, policy)
                statuses.set(plan, held_back, len(todo))
            run_id, base_seed = team.share(shared)
            if team.is_main:
                progress.note(f"synth {path.name}: {len(todo)} rows to generate, seed {base_seed}{how}")
            runner = _Runner(journal, book, writer, policy, out_dirs, options, team, run_id, base_seed, progress)
            summary = runner.run(todo[team.index:: team.size], make_generator, engine or LocalEngine(), len(todo))
            summary.recovered = recovered
            summary.main = team.is_main
            summary.skipped = len(plan.skipped)
            summary.failed += len(plan.failed)
            summary.failed_before = len(held_back)
            summary.failures = sorted(summary.failures + [(i.row, i.reason) for i in plan.failed])
            return summary
    finally:
        lock.release()


def check_workbook(workbook: str | Path, options: SynthOptions) -> None:
    """What stops a run before it starts, found without writing anything (and without reading every
    row): a workbook that is open in Excel, unreadable or without the columns synth needs."""
    path = Path(workbook)
    ensure_not_locked(path)
    check_columns(open_workbook(path, sheet=options.sheet, columns=options.columns, read_only=True))


# A review app holds the lock for the moment it takes to save its queued verdicts; a run waits that out.
LOCK_WAIT_SECONDS = 5.0


def acquire_within(lock: RenderLock, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not lock.acquire(blocking=False):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _out_dir(policy: PathPolicy, folder: str) -> Path:
    try:
        return policy.resolve(folder)[0]
    except BadPath as exc:
        raise EditForgeError(f"output folder {folder}: {exc}") from None


def _base_seed(journal: Journal, seed: int | None) -> tuple[int, str]:
    """--seed if given (and remembered), else the seed this journal already uses, else a new one; with
    how it was chosen, for the run's first line."""
    if seed is not None:
        return int(journal.set_meta("base_seed", str(seed))), ""
    known = journal.meta("base_seed")
    if known is not None:
        return int(known), " (this workbook's seed, remembered in its journal)"
    drawn = int(journal.set_meta("base_seed", str(random_base_seed()), only_if_absent=True))
    return drawn, f" (random; `seed={drawn}` reproduces it)"


def _refuse_too_many_inputs(plan: Plan, max_inputs: int | None) -> None:
    if max_inputs is None:
        return
    too_many = [job for job in plan.jobs if len(job.inputs) > max_inputs]
    plan.failed += [RowIssue(job.row, job.row_id, f"{len(job.inputs)} input images; the model takes at most {max_inputs}")
                    for job in too_many]
    plan.jobs = [job for job in plan.jobs if len(job.inputs) <= max_inputs]


def input_stamp(paths: Sequence[Path]) -> str:
    """What the input files are now (size and modification time): a failed row whose stamp changed
    has new inputs and is tried again."""
    parts = []
    for path in paths:
        try:
            stat = os.stat(path)
            parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:missing")
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


def _todo(plan: Plan, latest: dict[str, Result], retry_failed: bool) -> tuple[list[Todo], int, list[Result]]:
    """Planned jobs minus those an interrupted run already finished (they only need rendering) and
    those that failed before with the same inputs (returned third)."""
    todo, recovered, held_back = [], 0, []
    for job in plan.jobs:
        previous = latest.get(job.identity)
        if previous is None:
            todo.append(Todo(job, 0))
        elif previous.status == "done" and not previous.rendered:
            recovered += 1
        elif previous.status in ("done", "superseded"):
            # rendered and asked for again, or discarded when the row changed and now changed back: a new picture
            todo.append(Todo(job, previous.generation + 1))
        elif (previous.status == "running" or previous.failure in (None, "interrupted") or retry_failed
              or previous.input_stamp != input_stamp(job.inputs)):
            todo.append(Todo(job, previous.generation))  # killed, or asked to, or new inputs: the same generation again
        else:
            held_back.append(previous)
    return todo, recovered, held_back


def _reconcile(journal: Journal, sheet: str, plan: Plan, policy: PathPolicy) -> None:
    """Main process, before any worker starts: settle what earlier (killed) runs left behind."""
    running = journal.results(sheet=sheet, status="running")
    for r in running:  # the image may have been renamed into place but never journaled
        _delete_output(policy, r.output)
    journal.set_status([r.id for r in running], "failed", "interrupted", failure="interrupted")
    planned = {job.identity for job in plan.jobs}
    rendered, superseded = [], []
    for r in journal.results(sheet=sheet, status="done", rendered=False):
        if r.identity in planned:  # recovered: the next render writes it
            continue
        if r.output in plan.referenced:
            rendered.append(r.id)  # the workbook got it, the journal did not hear back
        else:  # its row changed before the result reached the workbook: stale
            _delete_output(policy, r.output)
            superseded.append(r.id)
    journal.mark_rendered(rendered)
    journal.set_status(superseded, "superseded", "row changed before the result was rendered")


def _delete_output(policy: PathPolicy, output: str) -> None:
    path = policy.resolve(output)[0]
    path.unlink(missing_ok=True)
    for leftover in path.parent.glob(f".{path.name}.tmp-*"):  # save_png_atomic's temp name
        leftover.unlink(missing_ok=True)


class _PlanStatuses:
    """Skip and bad-input reasons for gen_status, by row id: written at the first save and again into
    any version of the file someone else saved meanwhile (`SheetWriter`'s `statuses`)."""

    def __init__(self):
        self.texts: dict[str, str] = {}
        self.columns = False
        self._written_into = None  # the book object they are in

    def set(self, plan: Plan, held_back: list[Result], to_generate: int) -> None:
        for verdict, issues in (("skipped", plan.skipped), ("failed", plan.failed)):
            self.texts.update((i.row_id, f"{verdict}: {i.reason}") for i in issues if i.row_id)
        self.columns = bool(to_generate or self.texts or held_back)
        self._written_into = None

    def __call__(self, book: Workbook) -> bool:
        if book is self._written_into:
            return False
        self._written_into = book
        changed = False
        if self.columns:  # the run's two columns first, in this order
            known = book.column(GEN_SEED), book.column(GEN_STATUS)
            changed = known != (book.ensure_column(GEN_SEED), book.ensure_column(GEN_STATUS))
        for row_id, text in self.texts.items():
            row = book.row_of(row_id)
            if row is not None and book.get(row, GEN_STATUS) != text:
                book.set(row, GEN_STATUS, text)
                changed = True
        return changed


class _Runner:
    def __init__(self, journal: Journal, book: Workbook, writer: SheetWriter | None, policy: PathPolicy,
                 out_dirs: dict[str, Path], options: SynthOptions, team: Team, run_id: str, base_seed: int,
                 progress: Progress):
        self.journal, self.book, self.writer, self.policy, self.out_dirs = journal, book, writer, policy, out_dirs
        self.options, self.team, self.run_id, self.base_seed = options, team, run_id, base_seed
        self.progress = progress
        self.shown = 0  # rows the progress bar counts as done
        self.saver = SaveSchedule(options.save_every_rows, options.save_every_seconds)
        self.consecutive_errors = 0
        self.local: Counter[str] = Counter()  # this process's results, by status
        self.workers: Counter[str] = Counter()  # rows generated, by the worker process that made them
        self.pending: dict[int, Path] = {}  # result id -> output file, for the rows the engine is working on
        self.pairs: dict = {}  # result id -> the pair synth --judge scores (editforge.judge.workbook.RowPair)
        self.last: RenderStats | None = None

    def run(self, mine: list[Todo], make_generator, engine: Engine, total: int) -> Summary:
        summary = Summary(base_seed=self.base_seed)
        previous_sigterm = _sigterm_raises_interrupt()
        try:
            if mine:
                engine.start(make_generator, judge=self.options.judge)
            # started once the model is loaded, so images/min and the ETA measure generation only
            if total:
                self.progress.start("synth", total=total, unit="img", per_minute=True)
            for request, outcome in engine.pictures(self._requests(mine)):
                self._settle(request.key, outcome)
                if self.team.is_main:
                    self._show()
                    self._maybe_render()
            self._finished()
            if self.team.is_main:
                while not self._everyone_finished():  # keep rendering the others' results
                    time.sleep(0.5)
                    self._show()
                    self._maybe_render()
                self._show()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            engine.close()
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)
            if self.team.is_main:
                self._render()
        counts = self.journal.counts(self.run_id) if self.team.is_main else Counter(self.local)
        summary.generated = counts.get("done", 0)
        summary.failed = counts.get("failed", 0)
        summary.failures = [(r.row, r.error) for r in self.journal.results(run_id=self.run_id, status="failed")]
        summary.workers = self.workers
        if self.last is not None:
            summary.stale = self.last.stale
            summary.notes += [line for line in (self.last.held_line(),) if line]
        return summary

    def _requests(self, mine: list[Todo]) -> Iterator[Request]:
        """Each row journaled as `running` and its input files read, as the engine takes it."""
        for todo in mine:
            job = todo.job
            folder = self.out_dirs["raw" if job.target == RAW_IMAGE else "ref"]
            output = folder / f"{uuid.uuid4().hex}.png"
            seed = row_seed(self.base_seed, job.identity, todo.generation)
            result_id = self.journal.begin(
                sheet=self.book.sheet, identity=job.identity, generation=todo.generation, row=job.row,
                row_id=job.row_id, mode=job.mode, target=job.target, output=self.policy.cell_value(output),
                seed=seed, run_id=self.run_id, worker=self.team.index, input_stamp=input_stamp(job.inputs))
            self.pending[result_id] = output
            try:
                inputs = tuple((str(path), path.read_bytes()) for path in job.inputs)
                judge = self._judge_task(result_id, job, output) if self.options.judge else None
            except OSError as exc:  # gone or unreadable since the plan looked
                self._settle(result_id, Outcome("failed", seed, error=f"image not readable: {exc}", failure="input"))
                continue
            yield Request(result_id, inputs, job.prompt, seed, self.options.retries,
                          {"mode": job.mode, "workbook": self.book.path.name, "sheet": self.book.sheet,
                           "row": job.row, "row_id": job.row_id}, judge)

    def _judge_task(self, result_id: int, job: Job, output: Path) -> JudgeTask | None:
        """The pair `editforge judge` will read from this row once its picture is in (`generated_pair`): its
        images by name, the new picture as `NEW`, the files it needs besides the row's inputs as bytes."""
        from editforge.judge.workbook import generated_pair

        pair = generated_pair(self.book, job, output, self.policy)
        if pair.problem is not None:
            return None  # a bad path in the row: `editforge judge` will say so
        self.pairs[result_id] = pair
        name = lambda path: NEW if path == output else str(path)  # noqa: E731
        given = {str(path) for path in job.inputs}
        files = tuple((str(path), path.read_bytes()) for path in dict.fromkeys((*pair.inputs, pair.output))
                      if path != output and str(path) not in given)
        return JudgeTask(pair.instruction, tuple(map(name, pair.inputs)), name(pair.output), files,
                         self.options.judge_min)

    def _settle(self, result_id: int, outcome: Outcome) -> None:
        """Write what the engine made and journal it."""
        output = self.pending.pop(result_id)
        if outcome.failure == "error":
            self.consecutive_errors += 1  # one row's crash must not end a 10-hour run, but ten in a row are a broken setup
        elif outcome.failure != "input":
            self.consecutive_errors = 0  # the model ran: whatever the gate says, the setup works
        if outcome.status == "done":
            write_png_atomic(outcome.png, output)
            self.workers[outcome.worker] += 1
        self.journal.finish(result_id, status=outcome.status, seed=outcome.seed, error=outcome.error,
                            failure=outcome.failure, quality=outcome.quality)
        pair = self.pairs.pop(result_id, None)
        if outcome.status == "done" and pair is not None and outcome.judged is not None:
            from editforge.judge.workbook import record_score

            score, judge_name = outcome.judged  # after `finish`: its cells go after the picture's
            record_score(self.journal, self.book.sheet, pair, judge_name, score, None, self.run_id)
        self.local[outcome.status] += 1
        if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
            raise EditForgeError(f"stopping: {MAX_CONSECUTIVE_ERRORS} rows in a row failed; last: {outcome.error}")

    def _finished(self) -> None:
        self.journal.set_meta(f"run:{self.run_id}:finished:{self.team.index}", "1")

    def _everyone_finished(self) -> bool:
        return all(self.journal.meta(f"run:{self.run_id}:finished:{i}") for i in range(self.team.size))

    def _show(self) -> None:
        counts = self.journal.counts(self.run_id) if self.team.size > 1 else self.local  # the whole team's
        done = counts.get("done", 0) + counts.get("failed", 0)
        if done > self.shown:
            self.progress.advance(done - self.shown)
            self.shown = done

    def _maybe_render(self) -> None:
        self.saver.row_done()
        if self.saver.due():
            self._render()

    def _render(self) -> None:
        started = time.monotonic()
        try:
            self.last = self.writer.render()
        except EditForgeError as exc:  # Excel opened it meanwhile: the journal keeps everything
            self.progress.note(f"workbook not saved: {exc}; results are safe in the journal, run the same "
                               "command again to write them")
            self.saver.saved(time.monotonic() - started)
            return
        self.saver.saved(time.monotonic() - started if self.last.saved else 0.0)



class SaveSchedule:
    """When to render: every N rows or T seconds, but never more often than 10x a save's duration."""

    def __init__(self, every_rows: int, every_seconds: float):
        self.every_rows, self.every_seconds = every_rows, every_seconds
        self.rows = 0
        self.last = time.monotonic()
        self.cost = 0.0

    def row_done(self) -> None:
        self.rows += 1

    def due(self) -> bool:
        elapsed = time.monotonic() - self.last
        return (self.rows >= self.every_rows or elapsed >= self.every_seconds) and elapsed >= 10 * self.cost

    def saved(self, seconds: float) -> None:
        self.rows, self.last, self.cost = 0, time.monotonic(), seconds


def _sigterm_raises_interrupt():
    """SIGTERM (a scheduler's preemption, `kill`) ends the run like Ctrl-C: workbook saved."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def dry_run(workbook: str | Path, options: SynthOptions, *, limit: int = 20) -> str:
    """The plan as text: rows per mode, skip reasons, bad inputs. Reads only; writes nothing."""
    path = workbook_file(workbook)
    policy = PathPolicy(options.base_dir or path.parent, allow_outside=options.allow_outside)
    with RecalledFormulas(path) as memory:  # formula values remembered by earlier runs; nothing is written
        book = open_workbook(path, sheet=options.sheet, columns=options.columns, read_only=True, memory=memory)
        plan = plan_workbook(book, policy)
    modes = Counter(job.mode for job in plan.jobs)
    where = f"sheet {book.sheet!r}, " if book.sheet else ""
    layout = "positional columns A, B-D, E, G" if book.positional else f"header row {book.header_row}"
    lines = [f"{path.name} ({where}{layout}, base dir {policy.base})"]
    for mode in ("gen_raw", "gen_ref", "gen_extra_ref"):
        lines.append(f"  {mode:<14} {modes.get(mode, 0)}")
    if options.max_rows is not None and len(plan.jobs) > options.max_rows:
        lines.append(f"  (`max_rows={options.max_rows}`: only the first {options.max_rows} of these)")
    for verdict, issues in (("skipped", plan.skipped), ("failed", plan.failed)):
        lines.append(f"  {verdict:<14} {len(issues)}")
        by_reason: dict[str, list[int]] = {}
        for issue in issues:
            by_reason.setdefault(issue.reason, []).append(issue.row)
        for reason, rows in list(by_reason.items())[:limit]:
            shown = ", ".join(map(str, rows[:8])) + (f" and {len(rows) - 8} more" if len(rows) > 8 else "")
            lines.append(f"    {reason}: row{'s' if len(rows) > 1 else ''} {shown}")
        if len(by_reason) > limit:
            lines.append(f"    ... {len(by_reason) - limit} more reasons")
    return "\n".join(lines)
