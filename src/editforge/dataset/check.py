"""`check_samples`: everything that would spoil a training run, found before it starts.

Errors (exit 1): a path problem (hostile or URL), a missing file, an image that does not decode
(corrupt, truncated, not an image, over the pixel limit), an empty instruction, more controls than any
family takes (3), and with a model family given, a number of controls that family does not train on
(Edit v1: exactly one, its prompt template always holds an image).
Warnings: no control (without a family), a tiny or huge image, target and control aspect ratios far apart,
duplicate samples (same image bytes) and near-duplicates (perceptual hashes of target and every control
within `near_distance` bits).

Every distinct image file is read once, decoded and hashed in worker processes (decoding and the
perceptual hash are CPU-bound Python/C work; two processes use two cores where threads would
share one GIL). Near-duplicates come from an all-pairs Hamming distance over 64-bit hashes, done in
numpy blocks: ~n²/2 XOR+popcounts, about a second for 10,000 samples.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from editforge.dataset.sample import Sample, judge_distribution
from editforge.errors import EditForgeError
from editforge.images import open_rgb
from editforge.models.registry import FAMILIES, count_text
from editforge.progress import Progress

MAX_CONTROLS = max(family.max_images for family in FAMILIES.values())
INLINE_BELOW = 64  # images; fewer are not worth starting worker processes for


@dataclass(frozen=True)
class CheckOptions:
    min_side: int = 256          # shorter side below this: tiny (Qwen-Image trains at ~1 MP)
    max_side: int = 4096         # longer side above this: huge (slow to load, downscaled anyway)
    aspect_tolerance: float = 1.5  # target vs control aspect ratio, larger / smaller
    near_distance: int = 4       # perceptual-hash bits; 0 turns near-duplicate search off
    model_family: str | None = None  # check the number of controls against what this family trains on


@dataclass(frozen=True)
class ImageInfo:
    width: int = 0
    height: int = 0
    phash: int = 0
    digest: str = ""
    error: str | None = None  # "missing: ..." or "unreadable: ..."


@dataclass(frozen=True)
class Issue:
    severity: str  # "error" | "warning"
    kind: str
    sample: str
    detail: str


@dataclass
class CheckReport:
    samples: int
    images: int
    issues: list[Issue] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    judge: dict | None = None  # the judge score distribution (`judge_distribution`), when samples have scores

    @property
    def errors(self) -> int:
        return sum(i.severity == "error" for i in self.issues)

    @property
    def warnings(self) -> int:
        return sum(i.severity == "warning" for i in self.issues)

    def counts(self) -> dict[tuple[str, str], int]:
        """(severity, kind) -> count, errors first."""
        counts = Counter((i.severity, i.kind) for i in self.issues)
        return dict(sorted(counts.items(), key=lambda kv: (kv[0][0] != "error", kv[0][1])))

    def to_dict(self) -> dict:
        return {
            "samples": self.samples, "images": self.images, "errors": self.errors, "warnings": self.warnings,
            "counts": {kind: n for (_, kind), n in self.counts().items()},
            "issues": [asdict(i) for i in self.issues],
            "skipped": [{"sample": k, "reason": r} for k, r in self.skipped],
            "judge": self.judge,
        }


def inspect_image(path: str) -> ImageInfo:
    """Size, perceptual hash and content digest of one file; runs in a worker process."""
    import imagehash

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return ImageInfo(error="missing")
    except OSError as exc:
        return ImageInfo(error=f"unreadable ({exc.strerror or exc})")
    try:
        image = open_rgb(path)
    except EditForgeError as exc:
        return ImageInfo(error=str(exc))
    bits = imagehash.phash(image).hash.flatten()
    return ImageInfo(
        width=image.width, height=image.height,
        phash=int.from_bytes(np.packbits(bits).tobytes(), "big"),
        digest=hashlib.blake2b(data, digest_size=16).hexdigest(),
    )


def inspect_images(paths: list[str], *, workers: int | None = None,
                   on_done: Callable[[], None] | None = None) -> dict[str, ImageInfo]:
    """`inspect_image` for every path, in parallel; `on_done()` after each image (for a progress bar)."""
    import imagehash  # noqa: F401  (imported once here: forked workers inherit it instead of each importing scipy)

    workers = workers or os.cpu_count() or 1
    results: dict[str, ImageInfo] = {}
    if workers == 1 or len(paths) < INLINE_BELOW:
        stream: Iterator[ImageInfo] = map(inspect_image, paths)
        executor = None
    else:
        executor = ProcessPoolExecutor(max_workers=workers)
        stream = executor.map(inspect_image, paths, chunksize=max(1, min(64, len(paths) // (workers * 8))))
    try:
        for path, info in zip(paths, stream):
            results[path] = info
            if on_done is not None:
                on_done()
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return results


def check_samples(samples: list[Sample], options: CheckOptions = CheckOptions(), *, workers: int | None = None,
                  progress: Progress | None = None) -> CheckReport:
    """Check `samples`; `progress` shows the images being read."""
    paths = list(dict.fromkeys(str(p) for s in samples if not s.problems for p in s.images))
    progress = progress or Progress()
    progress.start("checking images", total=len(paths), unit="img")
    infos = inspect_images(paths, workers=workers, on_done=progress.advance)
    report = CheckReport(samples=len(samples), images=len(paths), judge=judge_distribution(samples))
    readable: list[Sample] = []
    for sample in samples:
        issues = list(_sample_issues(sample, infos, options))
        report.issues += issues
        if not any(i.kind in ("path", "missing", "unreadable") for i in issues):
            readable.append(sample)
    report.issues += _duplicates(readable, infos, options.near_distance)
    return report


def _sample_issues(sample: Sample, infos: dict[str, ImageInfo], options: CheckOptions) -> Iterable[Issue]:
    key = sample.key
    for problem in sample.problems:
        yield Issue("error", "path", key, problem)
    if not sample.instruction.strip():
        yield Issue("error", "empty_instruction", key, "the instruction is empty")
    yield from _control_issues(sample, options.model_family)
    if sample.problems:
        return
    sizes = []
    for role, path in zip(("target", *(f"control {k}" for k in range(1, len(sample.controls) + 1))), sample.images):
        info = infos[str(path)]
        if info.error == "missing":
            yield Issue("error", "missing", key, f"{role} not found: {path}")
        elif info.error:
            yield Issue("error", "unreadable", key, f"{role}: {info.error}")
        else:
            sizes.append((role, info.width, info.height))
            if min(info.width, info.height) < options.min_side:
                yield Issue("warning", "tiny", key, f"{role} is {info.width}x{info.height} (shorter side < {options.min_side})")
            if max(info.width, info.height) > options.max_side:
                yield Issue("warning", "huge", key, f"{role} is {info.width}x{info.height} (longer side > {options.max_side})")
    if sizes and sizes[0][0] == "target":
        _, tw, th = sizes[0]
        for role, w, h in sizes[1:]:
            ratio = max(tw / th, w / h) / min(tw / th, w / h)
            if ratio > options.aspect_tolerance:
                yield Issue("warning", "aspect_mismatch", key,
                            f"target {tw}x{th} vs {role} {w}x{h}: aspect ratios differ {ratio:.2f}x")


def _control_issues(sample: Sample, model_family: str | None) -> Iterable[Issue]:
    count = len(sample.controls)
    if model_family is None:
        if count > MAX_CONTROLS:
            yield Issue("error", "too_many_controls", sample.key,
                        f"{count} controls; no model takes more than {MAX_CONTROLS}")
        elif count == 0:
            yield Issue("warning", "no_control", sample.key, "no control image: editforge train takes it as a "
                        "text-to-image sample for Edit-2509; Edit v1 and other trainers cannot use it")
        return
    family = FAMILIES[model_family]
    if count not in family.training_image_counts:
        kind = "no_control" if count == 0 else "too_many_controls"
        yield Issue("error", kind, sample.key, f"{count} controls; {family.name} trains on samples with "
                    f"{count_text(family.training_image_counts, 'control image')}")


def _duplicates(samples: list[Sample], infos: dict[str, ImageInfo], near_distance: int) -> list[Issue]:
    issues = []
    first_by_content: dict[tuple, Sample] = {}
    unique: list[Sample] = []
    for sample in samples:
        content = tuple(infos[str(p)].digest for p in sample.images)
        first = first_by_content.setdefault(content, sample)
        if first is not sample:
            same_text = first.instruction.strip() == sample.instruction.strip()
            issues.append(Issue("warning", "duplicate", sample.key, f"same images as {first.key}"
                                + ("" if same_text else " with another instruction")))
        else:
            unique.append(sample)
    if near_distance > 0:
        issues += _near_duplicates(unique, infos, near_distance)
    return issues


def _near_duplicates(samples: list[Sample], infos: dict[str, ImageInfo], near_distance: int) -> list[Issue]:
    """Pairs whose targets are within `near_distance` bits, then confirmed on every control."""
    if len(samples) < 2:
        return []
    hashes = np.array([infos[str(s.target)].phash for s in samples], dtype=np.uint64)
    matches: dict[int, list[tuple[int, int]]] = defaultdict(list)
    block = max(1, 4_000_000 // len(hashes))  # rows per block: ~32 MB of uint64 at a time
    for start in range(0, len(hashes), block):
        rows = hashes[start:start + block]
        distance = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        for i, j in zip(*np.nonzero(distance <= near_distance)):
            a, b = start + int(i), int(j)
            if a < b:
                matches[b].append((a, int(distance[i, j])))
    issues = []
    for b in sorted(matches):
        for a, dist in matches[b]:
            if _controls_near(samples[a], samples[b], infos, near_distance):
                issues.append(Issue("warning", "near_duplicate", samples[b].key,
                                    f"looks like {samples[a].key} (target hash distance {dist})"))
                break
    return issues


def _controls_near(a: Sample, b: Sample, infos: dict[str, ImageInfo], near_distance: int) -> bool:
    if len(a.controls) != len(b.controls):
        return False
    return all(int(infos[str(x)].phash ^ infos[str(y)].phash).bit_count() <= near_distance
               for x, y in zip(a.controls, b.controls))
