"""Which files the review server may send: images under the base dir, nothing else.

The URL path arrives percent-decoded (`%2e%2e` is already `..`), so it is checked as a path: no
absolute paths, no `..` parts, and the real location (symlinks followed) must still be inside the
real base dir. Only image files are served, so a workbook or journal beside them never leaves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:")


class Refused(Exception):
    """A request for a path the server will not serve; the message says why (for the log, not the user)."""


def confined_file(base: Path, url_path: str) -> Path:
    """The file `url_path` names under `base`, or `Refused`. `FileNotFoundError` if it is simply absent."""
    if "\x00" in url_path or "\\" in url_path:
        raise Refused("odd characters")
    if url_path.startswith("/") or _WINDOWS_ABSOLUTE.match(url_path):
        raise Refused("absolute path")
    if ".." in url_path.split("/"):
        raise Refused("climbs out with ..")
    root = Path(os.path.realpath(base))
    real = Path(os.path.realpath(root / url_path))
    if root not in real.parents:
        raise Refused("leaves the base dir (symlink)")
    if real.suffix.lower() not in IMAGE_SUFFIXES:
        raise Refused("not an image")
    if not real.is_file():
        raise FileNotFoundError(url_path)
    return real


def file_url(relative: str) -> str:
    """The URL the page loads an image from; `relative` is a path under the base dir with slashes."""
    return "/files/" + quote(relative, safe="/")
