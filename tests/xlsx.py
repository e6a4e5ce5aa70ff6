"""Surgery on .xlsx files for tests: what Excel would have written, and what an attacker would.

openpyxl cannot compute formulas, so `with_cached_values` writes the values Excel caches beside each
formula (`<v>` in the sheet XML) the way Excel does: text as `t="str"`, booleans as `t="b"`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Callable

SHEET = "xl/worksheets/sheet1.xml"


def rebuild(path: Path, change: Callable[[str, bytes], bytes | None], out: Path | None = None) -> Path:
    """Copy the package part by part through `change(name, data)` (None drops the part)."""
    out = out or path
    with zipfile.ZipFile(path) as src:
        parts = [(info.filename, src.read(info.filename)) for info in src.infolist()]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in parts:
            data = change(name, data)
            if data is not None:
                dst.writestr(name, data)
    return out


def with_cached_values(path: Path, values: dict[str, object]) -> Path:
    """Give the formula cells `values` ({"C2": "make the car red", "D2": True, "F2": 3}) as Excel would."""

    def cache(name: str, data: bytes) -> bytes:
        if name != SHEET:
            return data
        text = data.decode()
        for ref, value in values.items():
            kind, shown = (("b", "1" if value else "0") if isinstance(value, bool) else
                           ("n", repr(value)) if isinstance(value, (int, float)) else ("str", _xml(str(value))))
            pattern = re.compile(rf'<c r="{ref}"((?: [a-z]+="[^"]*")*)><f>(.*?)</f><v ?/>')
            attrs = lambda m: re.sub(r' t="[^"]*"', "", m.group(1)) + ("" if kind == "n" else f' t="{kind}"')
            text, found = pattern.subn(lambda m: f'<c r="{ref}"{attrs(m)}><f>{m.group(2)}</f><v>{shown}</v>', text)
            assert found == 1, f"no formula cell {ref} in {path.name}"
        return text.encode()

    return rebuild(path, cache)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
