"""Where synth's pictures are made: the model's half of a row, apart from the driver's half.

synth (`editforge.sheet.synth`) plans, seeds and journals a row, reads its input files and turns them into a
`Request`; an engine makes the picture and answers with an `Outcome`; synth writes the PNG and journals it. The
request carries bytes, not paths, and the outcome a finished PNG file, so the model's half can run on another
machine with no shared filesystem (`editforge.sheet.ray_engine.RayEngine`) and still give the same bytes as
`LocalEngine`, which makes them in this process:

    engine = LocalEngine()
    engine.start(make_generator)              # loads the model (here: in this process)
    for request, outcome in engine.pictures(requests):
        ...                                   # outcome.png: the file to write, or outcome.error
    engine.close()

`make_picture` is the model's half itself, the same code whichever engine calls it: decode the inputs, the
generator's `check`, generate, the quality gate with its retries on the next seeds (with `synth --judge`, the
judge's score of the row's pair is part of the gate), encode the PNG.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from PIL import Image

from editforge.errors import EditForgeError
from editforge.images import open_rgb
from editforge.inference.metadata import png_bytes
from editforge.sheet.quality import QualityReport, check_quality

Generator = Callable[[Sequence[Image.Image], str, int], "tuple[Image.Image, dict[str, Any]]"]


NEW = ""  # in a `JudgeTask`, the picture being made


@dataclass(frozen=True)
class JudgeTask:
    """`synth --judge`: the row's pair to score once its picture is made (`editforge.judge`), as `editforge judge`
    will read it from the sheet. Images by name: the request's inputs, `files`, or `NEW`."""

    instruction: str
    inputs: tuple[str, ...]
    output: str
    files: tuple[tuple[str, bytes], ...] = ()  # the pair's images that are not among the request's inputs
    minimum: float | None = None               # a lower score fails the gate: the next seed is tried


@dataclass(frozen=True)
class Request:
    """One row's picture to make: all a worker needs, no path it would have to open."""

    key: int                           # the journal's result id: the driver's handle on the row
    inputs: tuple[tuple[str, bytes], ...]  # (the path as the workbook names it, the file's bytes), in slot order
    prompt: str
    seed: int                          # the first seed; quality-gate retries take the next ones
    retries: int
    png_params: Mapping[str, Any] = field(default_factory=dict)  # what the PNG carries besides the generator's
    judge: JudgeTask | None = None


@dataclass(frozen=True)
class Outcome:
    status: str                        # "done" or "failed"
    seed: int                          # the seed of the picture (or of the last try)
    png: bytes | None = None           # the file to write when done
    error: str | None = None
    failure: str | None = None         # "input" (the row's own), "error" (the model's or a worker's), "quality"
    quality: Mapping[str, float] | None = None
    worker: str = ""                   # which process made it: "host pid N"
    judged: tuple[float, str] | None = None  # with a `JudgeTask`: the pair's score and the judge's name


def worker_name() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def make_picture(generate: Generator, request: Request) -> Outcome:
    """The model's half of one row. Never raises for the row's sake: a failure is an `Outcome`."""
    seed, report, judged = request.seed, None, None
    try:
        images = [open_rgb(name, data=data) for name, data in request.inputs]
        check = getattr(generate, "check", None)
        if check is not None:
            check(images, request.prompt)
        for attempt in range(request.retries + 1):
            seed = request.seed + attempt
            image, params = generate(images, request.prompt, seed)
            report = check_quality(image, images)
            if report.ok and request.judge is not None:
                judged = _score(generate.judge(), request, images, image)
                if request.judge.minimum is not None and judged[0] < request.judge.minimum:
                    report = QualityReport(False, f"judge score {judged[0]:.3f} below {request.judge.minimum}",
                                           report.metrics)
            if report.ok:
                break
        if not report.ok:
            return Outcome("failed", seed, error=f"quality gate: {report.reason} ({request.retries + 1} tries)",
                           failure="quality", quality=report.metrics, worker=worker_name())
        png = png_bytes(image, {**params, "seed": seed, **request.png_params})
        return Outcome("done", seed, png=png, quality=report.metrics, worker=worker_name(), judged=judged)
    except EditForgeError as exc:  # unreadable input, input the model cannot take: this row's problem
        return Outcome("failed", seed, error=str(exc), failure="input", worker=worker_name())
    except Exception as exc:  # noqa: BLE001 - one row's crash must not end a 10-hour run (synth counts them)
        if _is_out_of_memory(exc):
            error = "out of memory (try a smaller `max_pixels`, `offload` or `quantize`)"
        else:
            error = describe(exc)
        return Outcome("failed", seed, error=error, failure="error", worker=worker_name())


def _score(judge, request: Request, images: list[Image.Image], made: Image.Image) -> tuple[float, str]:
    from editforge.judge.ask import Pair, score_pairs
    from editforge.judge.workbook import SCORE_DIGITS

    task = request.judge
    by_name = {name: image for (name, _), image in zip(request.inputs, images)}
    by_name |= {name: open_rgb(name, data=data) for name, data in task.files} | {NEW: made}
    pair = Pair(tuple(by_name[name] for name in task.inputs), by_name[task.output], task.instruction)
    return round(score_pairs(judge, [pair])[0], SCORE_DIGITS), judge.name


def start_generator(make_generator: Callable[[], Generator], judge: bool) -> Generator:
    """The generator, with its judge built (the pipeline's own text encoder) when `judge`."""
    generate = make_generator()
    if judge:
        if getattr(generate, "judge", None) is None:
            raise EditForgeError("`judge` needs a generator with a judge (a Qwen-Image edit pipeline); this one has none")
        generate.judge()
    return generate


class Engine(Protocol):
    def start(self, make_generator: Callable[[], Generator], judge: bool = False) -> None:
        """Load the model (wherever the pictures are made), and its judge when `judge`; called only when there
        are rows to do."""

    def pictures(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Outcome]]:
        """Each request's outcome, in any order; a request is taken from `requests` only when it can be
        worked on, so the driver journals a row as it goes out."""

    def close(self) -> None:
        """Let the model go (also after an interrupt)."""


class LocalEngine:
    """This process makes the pictures, one row after another, with the model loaded here."""

    def __init__(self):
        self.generate: Generator | None = None

    def start(self, make_generator: Callable[[], Generator], judge: bool = False) -> None:
        self.generate = start_generator(make_generator, judge)

    def pictures(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Outcome]]:
        for request in requests:
            yield request, make_picture(self.generate, request)

    def close(self) -> None:
        self.generate = None


def _is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_available():
            cuda.empty_cache()  # give the next row the memory back
        return True
    return False


def describe(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
