"""`editforge judge WORKBOOK`: score every pair of a synth workbook, journaled, resumable, into the sheet.

    summary = judge_workbook("data.xlsx", "qwen-image-edit-2509", lambda: load_judge("qwen-image-edit-2509"),
                             JudgeOptions(reason=True), progress=Progress())

A row's pair is what `dataset export` trains on: the input images `ref_image_1..3` (slot order), the output
`raw_image`, the training instruction (`edit_prompt`, else `instruction`, else `gen_edit_prompt`). Rows still
waiting for a picture (`need_gen` true) and rows without both sides are not pairs; a pair whose image is
missing, unreadable or outside the base dir fails alone, with the reason in `judge_reason`.

The journal is the truth here as in synth: each judged batch goes into its `judgements` table together with
a queued change holding the row's `judge_score` / `judge_reason` cells (written only while the row still
shows the pictures and instruction that were judged). The workbook is rendered from the journal every N
rows / T seconds and at exit, into the file as it is on disk then (a person's edits win), under the same
lock synth takes. A killed run loses nothing: the next run writes what was queued and judges only the rows
whose pair (judge, instruction, image files) has no judgement yet.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from editforge.errors import EditForgeError
from editforge.images import open_rgb
from editforge.judge.ask import Pair, draft_instructions, explain_pairs, score_pairs
from editforge.judge.model import Judge
from editforge.paths import BadPath, PathPolicy
from editforge.progress import Progress
from editforge.sheet.journal import Journal, Judgement
from editforge.sheet.render import RenderLock, SheetWriter
from editforge.sheet.schema import (
    DRAFTED_BY_JUDGE, EDIT_PROMPT, EDIT_PROMPT_SOURCE, INSTRUCTION_COLUMNS, JUDGE_REASON, JUDGE_SCORE, NEED_GEN,
    RAW_IMAGE, REF_KEYS, cell_text, is_true,
)
from editforge.sheet.synth import LOCK_WAIT_SECONDS, SaveSchedule, acquire_within, input_stamp
from editforge.sheet.workbook import Workbook, ensure_not_locked, open_workbook, workbook_file

SCORE_DIGITS = 4


@dataclass
class JudgeOptions:
    sheet: str | None = None
    base_dir: Path | None = None          # default: the workbook's folder
    columns: Mapping[str, str] | None = None
    allow_outside: bool = False
    reason: bool = False                  # also a greedy one-sentence reason per pair
    write_instructions: bool = False      # draft edit_prompt where a row has only a generation prompt
    batch_size: int = 8
    save_every_rows: int = 100
    save_every_seconds: float = 60.0


@dataclass
class JudgeSummary:
    judged: int = 0
    drafted: int = 0                      # instructions drafted (--write-instructions)
    failed: int = 0
    already: int = 0                      # judged by an earlier run, pair unchanged
    scores: list[float] = field(default_factory=list)  # this run's
    failures: list[tuple[int, str]] = field(default_factory=list)  # (row, reason)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)

    def line(self) -> str:
        text = f"judged {self.judged}, failed {self.failed}" + (f", drafted {self.drafted} instructions"
                                                                 if self.drafted else "")
        if self.already:
            text += f" (+{self.already} judged before, unchanged)"
        if self.scores:
            text += (f"; scores min {min(self.scores):.3f}, median {statistics.median(self.scores):.3f}, "
                     f"max {max(self.scores):.3f}")
        return text + (" — interrupted" if self.interrupted else "")


@dataclass(frozen=True)
class RowPair:
    """One row's pair as the sheet names it now."""

    row: int
    row_id: str
    inputs: tuple[Path, ...]
    output: Path | None                   # None when the paths are bad (`problem` says why)
    instruction: str
    expect: dict[str, str]                # the cells that define the pair: a judgement is written only while they hold
    problem: str | None = None
    draft_into: str | None = None         # the empty instruction column a drafted instruction goes into

    def fingerprint(self, judge_name: str) -> str:
        return pair_fingerprint(judge_name, self.instruction, [*self.inputs, *([self.output] if self.output else [])],
                                self.problem)


def pair_fingerprint(judge_name: str, instruction: str, files: Sequence[Path], problem: str | None = None) -> str:
    """What a judgement judged: the judge, the instruction, the image files as they are now (paths, sizes and
    modification times, in order: inputs, then output)."""
    text = json.dumps([judge_name, instruction, [str(f) for f in files], input_stamp(files), problem])
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def judge_workbook(workbook: str | Path, judge_name: str, make_judge: Callable[[], Judge],
                   options: JudgeOptions | None = None, *, progress: Progress | None = None) -> JudgeSummary:
    """Judge every pair of `workbook` not judged yet; `make_judge()` is called only when there is one to judge.
    `judge_name` names the judge in the journal (a pair judged by another judge is judged again)."""
    options = options or JudgeOptions()
    progress = progress or Progress()
    path = workbook_file(workbook)
    policy = PathPolicy(options.base_dir or path.parent, allow_outside=options.allow_outside)
    ensure_not_locked(workbook, path)
    lock = RenderLock(path)
    if not acquire_within(lock, LOCK_WAIT_SECONDS):
        raise EditForgeError(f"an `editforge synth` or `judge` is running on {path.name}; wait for it to finish")
    try:
        with Journal.for_workbook(path) as journal:
            writer = SheetWriter(workbook, journal, policy, sheet=options.sheet, columns=options.columns)
            writer.render(results=False)  # row ids first: judgements hang on them
            pairs = sheet_pairs(writer.book, policy, draft=options.write_instructions)
            latest = journal.latest_judgements(writer.book.sheet)
            todo = [p for p in pairs
                    if p.draft_into or not _judged(latest.get(p.row_id), p.fingerprint(judge_name), options)]
            summary = JudgeSummary(already=len(pairs) - len(todo))
            progress.note(f"judge {path.name}: {len(todo)} pairs to judge, {summary.already} judged before")
            run = _Run(journal, writer, judge_name, options, uuid.uuid4().hex, summary, progress)
            try:
                run.judge(todo, make_judge)
            except KeyboardInterrupt:
                summary.interrupted = True
            finally:
                run.render()
            return summary
    finally:
        lock.release()


def sheet_pairs(book: Workbook, policy: PathPolicy, *, draft: bool = False) -> list[RowPair]:
    """Every row of `book` that holds a pair: a raw_image, at least one ref_image, an instruction, and no
    picture still to make. With `draft`, a pair whose only instruction is the generation prompt gets the
    training-instruction column to draft into (`edit_prompt`, or `instruction` where only that exists)."""
    keys = _pair_keys(book)
    draft_into = next((k for k in INSTRUCTION_COLUMNS[:-1] if book.column(k) is not None), EDIT_PROMPT)
    pairs = []
    for row, values in book.records([*keys, NEED_GEN]):
        if is_true(values[NEED_GEN]):
            continue
        texts = {k: cell_text(values[k]) for k in keys}
        pair = row_pair(row, book.row_id(row), texts, policy)
        if pair is not None and draft and not any(texts.get(k) for k in INSTRUCTION_COLUMNS[:-1]):
            pair = replace(pair, draft_into=draft_into, expect={**pair.expect, draft_into: ""})
        if pair is not None:
            pairs.append(pair)
    return pairs


def _pair_keys(book: Workbook) -> list[str]:
    """The columns that define a pair, as the sheet has them: raw_image, the ref slots, the instruction columns."""
    return [RAW_IMAGE, *(k for k in (*REF_KEYS, *INSTRUCTION_COLUMNS) if book.column(k) is not None)]


def row_pair(row: int, row_id: str, texts: dict[str, str], policy: PathPolicy) -> RowPair | None:
    """The pair of a row whose defining cells hold `texts` (see `_pair_keys`), or None if it holds none."""
    refs = [k for k in REF_KEYS if texts.get(k)]
    instruction = next((texts[k] for k in INSTRUCTION_COLUMNS if texts.get(k)), None)
    if not texts.get(RAW_IMAGE) or not refs or instruction is None:
        return None
    # the empty instruction columns too: one filled meanwhile would change the instruction
    common = dict(row=row, row_id=row_id, instruction=instruction, expect=dict(texts))
    try:
        inputs = tuple(_resolve(policy, k, texts[k]) for k in refs)
        return RowPair(inputs=inputs, output=_resolve(policy, RAW_IMAGE, texts[RAW_IMAGE]), **common)
    except BadPath as exc:
        return RowPair(inputs=(), output=None, problem=str(exc), **common)


def generated_pair(book: Workbook, job, output: Path, policy: PathPolicy) -> RowPair:
    """The pair synth's `job` makes of its row once its picture is at `output`: the same pair (and fingerprint)
    `editforge judge` will read from the sheet, so a later `judge` run finds it judged."""
    texts = {k: cell_text(book.get(job.row, k)) for k in _pair_keys(book)}
    texts[job.target] = policy.cell_value(output)
    return row_pair(job.row, job.row_id, texts, policy)


def record_score(journal: Journal, sheet: str, pair: RowPair, judge_name: str, score: float, reason: str | None,
                 run_id: str, draft: str | None = None) -> None:
    """Journal a score, its cells queued for the row (with a drafted instruction, marked as the judge's)."""
    cells = {JUDGE_SCORE: score, JUDGE_REASON: reason}
    if draft is not None:
        cells |= {pair.draft_into: draft, EDIT_PROMPT_SOURCE: DRAFTED_BY_JUDGE}
    journal.record_judgement(sheet, pair.row_id, pair.fingerprint(judge_name), row=pair.row, cells=cells,
                             expect=pair.expect, score=score, reason=reason, draft=draft, run_id=run_id)


def _resolve(policy: PathPolicy, column: str, text: str) -> Path:
    try:
        return policy.resolve(text)[0]
    except BadPath as exc:
        raise BadPath(f"{column}: {exc}") from None


def _judged(previous: Judgement | None, fingerprint: str, options: JudgeOptions) -> bool:
    if previous is None or previous.pair != fingerprint:
        return False
    return not options.reason or previous.reason is not None or previous.error is not None


class _Run:
    def __init__(self, journal: Journal, writer: SheetWriter, judge_name: str, options: JudgeOptions, run_id: str,
                 summary: JudgeSummary, progress: Progress):
        self.journal, self.writer, self.judge_name, self.options = journal, writer, judge_name, options
        self.run_id, self.summary, self.progress = run_id, summary, progress
        self.saver = SaveSchedule(options.save_every_rows, options.save_every_seconds)

    def judge(self, todo: list[RowPair], make_judge: Callable[[], Judge]) -> None:
        if not todo:
            return
        judge = make_judge()
        self.progress.start("judge", total=len(todo), unit="pair")
        for start in range(0, len(todo), self.options.batch_size):
            batch = todo[start:start + self.options.batch_size]
            readable = []
            for pair in batch:
                try:
                    readable.append((pair, _load(pair)))
                except EditForgeError as exc:
                    self._failed(pair, str(exc))
            if readable:
                self._score(judge, readable)
            self.progress.advance(len(batch))
            for _ in batch:
                self.saver.row_done()
            if self.saver.due():
                self.render()

    def _score(self, judge: Judge, readable: list[tuple[RowPair, Pair]]) -> None:
        readable = self._draft(judge, readable)
        pairs = [p for _, p in readable]
        scores = score_pairs(judge, pairs, batch_size=len(pairs))
        reasons = explain_pairs(judge, pairs, batch_size=len(pairs)) if self.options.reason else [None] * len(pairs)
        for (pair, _), score, reason in zip(readable, scores, reasons):
            score = round(score, SCORE_DIGITS)
            draft = pair.instruction if pair.draft_into else None
            record_score(self.journal, self.writer.book.sheet, pair, self.judge_name, score, reason, self.run_id, draft)
            self.summary.judged += 1
            self.summary.scores.append(score)

    def _draft(self, judge: Judge, readable: list[tuple[RowPair, Pair]]) -> list[tuple[RowPair, Pair]]:
        """Draft the instructions the rows lack; a row is then judged with its draft, the instruction it trains
        with from now on (an empty draft fails the row)."""
        wanting = [(row, pair) for row, pair in readable if row.draft_into]
        if not wanting:
            return readable
        drafts = dict(zip((row.row_id for row, _ in wanting),
                          draft_instructions(judge, [pair for _, pair in wanting], batch_size=len(wanting))))
        kept = []
        for row, pair in readable:
            draft = drafts.get(row.row_id)
            if draft is None:
                kept.append((row, pair))
            elif not draft:
                self._failed(replace(row, draft_into=None), "the judge drafted an empty instruction")
            else:
                kept.append((replace(row, instruction=draft), replace(pair, instruction=draft)))
                self.summary.drafted += 1
        return kept

    def _failed(self, pair: RowPair, error: str) -> None:
        self.journal.record_judgement(
            self.writer.book.sheet, pair.row_id, pair.fingerprint(self.judge_name), row=pair.row,
            cells={JUDGE_SCORE: None, JUDGE_REASON: f"failed: {error}"}, expect=pair.expect, error=error,
            run_id=self.run_id)
        self.summary.failed += 1
        self.summary.failures.append((pair.row, error))

    def render(self) -> None:
        started = time.monotonic()
        try:
            stats = self.writer.render(results=False)
        except EditForgeError as exc:  # Excel opened it meanwhile: the journal keeps everything
            self.progress.note(f"workbook not saved: {exc}; the scores are safe in the journal, run the same "
                               "command again to write them")
            self.saver.saved(time.monotonic() - started)
            return
        self.saver.saved(time.monotonic() - started if stats.saved else 0.0)
        held = stats.held_line()
        if held and held not in self.summary.notes:
            self.summary.notes.append(held)


def _load(pair: RowPair) -> Pair:
    if pair.problem is not None:
        raise EditForgeError(pair.problem)
    return Pair(tuple(open_rgb(p) for p in pair.inputs), open_rgb(pair.output), pair.instruction)


def judge_with_model(workbook: str | Path, model: str | None = None, options: JudgeOptions | None = None, *,
                     judge_model: str | None = None, device: str | None = None, dtype: str | None = None,
                     pixels: int | None = None, progress: Progress | None = None) -> JudgeSummary:
    """`judge_workbook` as `editforge judge` runs it: the workbook and the judge's files (its head included)
    are checked before anything is written; the judge loads only when there is a pair to judge."""
    from editforge.judge.model import find_judge, load_judge_from
    from editforge.models.loading import resolve_device

    options = options or JudgeOptions()
    ensure_not_locked(workbook)
    open_workbook(workbook, sheet=options.sheet, columns=options.columns, read_only=True)  # readable, has a header
    resolve_device(device)
    source = find_judge(None if judge_model else model, judge_model=judge_model)
    return judge_workbook(workbook, source.name,
                          lambda: load_judge_from(source, device=device, dtype=dtype, pixels=pixels),
                          options, progress=progress)
