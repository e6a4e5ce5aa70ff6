"""Writing an export folder: stable file names, copy or hard-link, idempotent, crash-safe.

A format writer only describes what the folder should hold (an `ExportPlan`); `write_plan` makes the
folder hold exactly that. Image names are `<six-digit index>-<original stem>`, one folder per role
(`target/`, `control_1/` ...), so names never collide and the same samples always get the same names.
Re-exporting into the same folder rewrites nothing that is already right and removes files an
earlier export wrote that the new one does not (a folder-scanning trainer would train on them). A
folder that holds anything else is refused: an export never deletes or overwrites a user's files,
and never writes into a source file (copies go to a temp name and are renamed into place). The
manifest is data like any other: an entry that is not a relative path resolving inside the folder
(`../../x`, an absolute path, a path through a symlink out) makes it damaged, and nothing is deleted.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from editforge.dataset.sample import Sample
from editforge.errors import EditForgeError
from editforge.files import atomic_write, replacing
from editforge.images import open_rgb

MANIFEST = ".editforge-export.json"
# What every supported trainer's folder loader lists (ai-toolkit `img_ext_list`: .jpg .jpeg .png
# .webp); other formats (BMP, TIFF, GIF, ...) are re-encoded as PNG, losslessly.
IMAGE_SUFFIXES = (".png", ".jpg", ".webp")
_SUFFIX_ALIASES = {".jpeg": ".jpg"}
_UNSAFE = re.compile(r"[^\w.-]+")
_EXPORT_PREFIX = re.compile(r"^\d{6}-")  # re-exporting an export keeps `000001-cat`, not `000001-000001-cat`


@dataclass(frozen=True)
class PlacedImage:
    source: Path
    rel: str           # path inside the export folder, forward slashes
    reencode: bool     # the source's format is not one trainers read, or the name must change format


@dataclass
class ExportPlan:
    images: list[PlacedImage] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    # Files too large to build in memory (parquet): rel -> function writing the file at a given path.
    writers: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # samples the format cannot hold, and why

    def files(self) -> list[str]:
        return [i.rel for i in self.images] + list(self.texts) + list(self.writers)

    def place_sample(self, index: int, sample: Sample, *, same_suffix: bool = False) -> tuple[str, list[str]]:
        """Add a sample's images as `target/<name>` and `control_<k>/<name>`; returns their rel paths.

        `same_suffix`: every image of the sample gets one suffix (SimpleTuner pairs files by their
        full name), so a sample that mixes formats is written all-PNG.
        """
        stem = f"{index:06d}-{_UNSAFE.sub('_', _EXPORT_PREFIX.sub('', sample.target.stem))[:60]}"
        suffixes = [_normal_suffix(p) for p in sample.images]
        if same_suffix and len(set(suffixes)) > 1:
            suffixes = [".png"] * len(suffixes)
        rels = []
        for role, path, suffix in zip(_roles(len(sample.controls)), sample.images, suffixes):
            rel = f"{role}/{stem}{suffix}"
            self.images.append(PlacedImage(path, rel, reencode=_normal_suffix(path, keep=True) != suffix))
            rels.append(rel)
        return rels[0], rels[1:]


def _roles(n_controls: int) -> list[str]:
    return ["target", *(f"control_{k}" for k in range(1, n_controls + 1))]


def _normal_suffix(path: Path, keep: bool = False) -> str:
    suffix = path.suffix.lower()
    suffix = _SUFFIX_ALIASES.get(suffix, suffix)
    if keep or suffix in IMAGE_SUFFIXES:
        return suffix
    return ".png"


def prepare_out_dir(out_dir: Path) -> set[str]:
    """The files a previous export wrote into `out_dir` (empty for a new folder); refuses foreign folders."""
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
            if not isinstance(files, list):
                raise TypeError("files is not a list")
            for rel in files:
                _check_entry(out_dir, rel)
            return set(files)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise EditForgeError(f"{manifest} is damaged ({exc}); nothing was deleted; delete the folder's "
                                 "contents and export again")
    if out_dir.exists() and not out_dir.is_dir():
        raise EditForgeError(f"`out` {out_dir} is a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise EditForgeError(
            f"{out_dir} is not empty and was not written by `editforge dataset export`; "
            "choose a new or empty folder (an export removes files it did not write)"
        )
    return set()


def _check_entry(out_dir: Path, rel) -> None:
    """A manifest entry must name a file inside `out_dir`, symlinks followed; ValueError otherwise."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ValueError(f"entry {rel!r} is not a file name")
    if rel.startswith("/") or "\\" in rel or re.match(r"^[A-Za-z]:", rel) or ".." in rel.split("/"):
        raise ValueError(f"entry {rel!r} is not a path inside the export folder")
    root = os.path.realpath(out_dir)
    if not os.path.realpath(os.path.join(out_dir, rel)).startswith(root.rstrip(os.sep) + os.sep):
        raise ValueError(f"entry {rel!r} leaves the export folder through a symlink")


def write_plan(out_dir: Path, plan: ExportPlan, *, link: bool = False) -> None:
    """Make `out_dir` hold exactly the planned files; see the module docstring."""
    out_dir = Path(os.path.abspath(out_dir))
    previous = prepare_out_dir(out_dir)
    planned = plan.files()
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel in planned:  # a folder inside that is a symlink out would take our files elsewhere
        try:
            _check_entry(out_dir, rel)
        except ValueError as exc:
            raise EditForgeError(f"cannot export into {out_dir}: {exc}") from None
    # Record every file this run may leave behind before writing any, so a crash mid-way still lets
    # the next export clean up after it.
    _write_manifest(out_dir, sorted(previous | set(planned)))
    for image in plan.images:
        _place_image(image, out_dir / image.rel, link)
    for rel, text in plan.texts.items():
        _write_if_changed(out_dir / rel, text.encode("utf-8"))
    for rel, write in plan.writers.items():
        dest = out_dir / rel
        with replacing(dest) as tmp:
            write(tmp)
            if dest.is_file() and filecmp.cmp(tmp, dest, shallow=False):
                tmp.unlink()  # unchanged: keep the file (and its mtime) as it is
    for rel in sorted(previous - set(planned)):
        stale = out_dir / rel
        stale.unlink(missing_ok=True)
        _remove_empty_parents(stale.parent, out_dir)
    _write_manifest(out_dir, sorted(planned))


def _place_image(image: PlacedImage, dest: Path, link: bool) -> None:
    src = image.source
    src_stat = src.stat()
    if dest.exists():
        if os.path.samefile(src, dest):
            return
        dest_stat = dest.stat()
        # Every written image carries its source's mtime, so an unchanged source means a finished file.
        if dest_stat.st_mtime_ns == src_stat.st_mtime_ns and (image.reencode or dest_stat.st_size == src_stat.st_size):
            return
    with replacing(dest) as tmp:
        if image.reencode:
            open_rgb(src).save(tmp, format="PNG")
            os.utime(tmp, ns=(src_stat.st_atime_ns, src_stat.st_mtime_ns))
        elif link:
            try:
                os.link(src, tmp)
            except OSError:  # another filesystem, or one without hard links: copy instead
                shutil.copy2(src, tmp)
        else:
            shutil.copy2(src, tmp)


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    atomic_write(path, lambda fh: fh.write(data))


def _write_manifest(out_dir: Path, files: list[str]) -> None:
    _write_if_changed(out_dir / MANIFEST, (json.dumps({"files": files}, indent=1) + "\n").encode("utf-8"))


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent
