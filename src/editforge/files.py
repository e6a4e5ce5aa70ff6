"""Files written so that a crash never leaves half of one, and text read in the encodings users have.

Every file EditForge writes for the user (workbooks, PNGs, exported datasets, caches, LoRAs) goes
through `replacing`/`atomic_write`: written beside its final name as `.NAME.tmp-PID`, flushed to disk,
then renamed over. A reader sees the old file or the new one, never a mix, and a crash leaves at most a
temp file whose name says what it is; `remove_stale_temps` deletes those whose process is gone
(synth does, beside the workbook and in its output folders, when it starts).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from editforge.errors import EditForgeError

# Chinese Excel saves CSV as GB18030; everything else users have is UTF-8, with or without a BOM.
TEXT_ENCODINGS = ("utf-8-sig", "gb18030")


# "C:/x" or "//server/share" typed on Windows: absolute there, never relative to a folder here.
_WINDOWS_ABSOLUTE = re.compile(r"^([A-Za-z]:/|//)")


def portable_path(text: str) -> tuple[str, bool]:
    """A path typed on any OS as (text with forward slashes, whether it is absolute on some OS)."""
    path = text.strip().replace("\\", "/")
    return path, bool(os.path.isabs(path) or _WINDOWS_ABSOLUTE.match(path))


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


_TEMP = re.compile(r"^\..+\.(?:tmp|bak)-(\d+)$")  # temp_name's and _backup's staging names


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files in `folder` left by processes that are gone (killed mid-save); returns them.

    A file whose process still runs (or whose PID another process now has) is left alone: it may be
    a save in progress.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMP.match(path.name)
        if match and not _process_alive(int(match.group(1))) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:  # pid out of range and the like: no such process
        return False
    return True


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, backup: bool = False, durable: bool = True,
              before_replace: Callable[[], object] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it replaces `path`.

    A block that leaves no file at the temporary path replaces nothing (say, because the new content
    equals the old). `backup` keeps the previous file as `NAME.bak`; `durable` fsyncs file and folder.
    `before_replace` runs last before the rename; raising there leaves `path` as it is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            return
        if durable:
            _fsync(tmp)
        if before_replace is not None:
            before_replace()
        if backup and path.exists():
            _backup(path)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, backup: bool = False,
                 durable: bool = True, before_replace: Callable[[], object] | None = None) -> Path:
    """`write(fh)` the new content of `path` into a temporary file, then rename it over `path`."""
    with replacing(path, backup=backup, durable=durable, before_replace=before_replace) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
    return Path(path)


def decode_text(data: bytes, path: str | os.PathLike) -> tuple[str, str]:
    """(text, encoding) of a user's text file; an error naming the file if no known encoding fits."""
    for encoding in TEXT_ENCODINGS:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise EditForgeError(f"{path} is not UTF-8 text; save it as UTF-8")


def read_text(path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.is_file():
        raise EditForgeError(f"file not found: {path}")
    return decode_text(path.read_bytes(), path)[0]


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _backup(path: Path) -> None:
    """Make `NAME.bak` the current file. A hard link costs nothing and is itself atomic."""
    bak = path.with_name(path.name + ".bak")
    staging = path.with_name(f".{path.name}.bak-{os.getpid()}")
    staging.unlink(missing_ok=True)
    try:
        os.link(path, staging)
    except OSError:  # filesystems without hard links
        shutil.copy2(path, staging)
    os.replace(staging, bak)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
