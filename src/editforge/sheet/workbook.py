"""The user's annotation workbook (.xlsx/.xlsm via openpyxl, or .csv), read and written in place.

    from editforge.sheet.workbook import open_workbook, create_workbook

    book = open_workbook("data.xlsx", sheet=None, columns={"gen_edit_prompt": "Prompt"})
    book.columns                      # {"raw_image": 1, "ref_image_1": 2, ...}: standard key -> column
    for row, values in book.rows():   # row: the sheet's 1-based row number; values: {header: value}
        ...
    for row, values in book.records(["raw_image", "need_gen"]):   # only these, faster on big sheets
        ...
    book.get(12, "review")            # by standard key or header text (case/space-insensitive)
    book.set(12, "review", "ok")      # a missing column is created after the last used one
    book.save()                       # atomic: temp file + rename, the previous file kept as `.bak`

    create_workbook("new.xlsx", ["raw_image", "gen_edit_prompt"], [["a.png", "make it red"]])

Header detection: the header is the first of the top rows that names a standard column
(`raw_image, ref_image_1..3, gen_edit_prompt, need_gen`; case, surrounding spaces, inner spaces and
hyphens ignored, `columns={key: header}` renames one). A sheet whose header names none of them gets
the positions of the original script: A raw, B-D refs, E prompt, G need_gen, header in the first row.

Everything the caller does not write stays as it was: openpyxl loads formulas as formulas (no
`data_only`), and styles, widths, comments and other sheets are saved back untouched. CSV keeps its
encoding (UTF-8 with or without BOM, or GB18030 as Chinese Excel writes it), delimiter and line ends.

A workbook open in Excel or LibreOffice (lock file `~$name` / `.~lock.name#` beside it) is refused
by `save()` and by `ensure_not_locked()` with an `EditForgeError`, because saving under Excel's feet
loses either its edits or ours.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from copy import copy
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from editforge.errors import EditForgeError
from editforge.files import atomic_write, decode_text

REF_KEYS = ("ref_image_1", "ref_image_2", "ref_image_3")
STANDARD_KEYS = ("raw_image", *REF_KEYS, "gen_edit_prompt", "need_gen")
# The original script's fixed layout, used when the header row names no standard column.
POSITIONAL_COLUMNS = {"raw_image": 1, "ref_image_1": 2, "ref_image_2": 3, "ref_image_3": 4,
                      "gen_edit_prompt": 5, "need_gen": 7}
HEADER_SEARCH_ROWS = 20
XLSX_SUFFIXES = (".xlsx", ".xlsm")


def normalize_header(value: Any) -> str:
    """`" Ref Image 1 "` -> `"ref_image_1"`: how headers are compared."""
    return re.sub(r"[\s\-_]+", "_", str(value).strip().lower()) if value is not None else ""


def lock_file(path: str | os.PathLike) -> Path | None:
    """The Excel/LibreOffice lock file that says `path` is open in an editor, if there is one."""
    path = Path(path)
    # Excel: "~$" + name; for long names Word-style owner files drop the first two characters.
    for name in (f"~${path.name}", f"~${path.name[2:]}", f".~lock.{path.name}#"):
        candidate = path.with_name(name)
        if candidate.exists():
            return candidate
    return None


def ensure_not_locked(path: str | os.PathLike) -> None:
    lock = lock_file(path)
    if lock is not None:
        raise EditForgeError(
            f"{Path(path).name} is open in Excel or LibreOffice (lock file {lock.name}); "
            "close it and run again"
        )


class _XlsxGrid:
    """One worksheet of an openpyxl workbook as a grid of values."""

    def __init__(self, path: Path, sheet: str | None, read_only: bool):
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            self.book = openpyxl.load_workbook(
                path, read_only=read_only, keep_vba=path.suffix.lower() == ".xlsm",
                keep_links=True, rich_text=not read_only,
            )
        except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise EditForgeError(f"not a readable .xlsx workbook: {path} ({exc.__class__.__name__})") from exc
        if sheet is None:
            self.ws = self.book.active
        elif sheet in self.book.sheetnames:
            self.ws = self.book[sheet]
        else:
            raise EditForgeError(f"no sheet {sheet!r} in {path.name}; it has: {', '.join(self.book.sheetnames)}")
        self.sheet_name = self.ws.title
        self.read_only = read_only

    def iter_rows(self, min_row: int = 1) -> Iterator[tuple]:
        return self.ws.iter_rows(min_row=min_row, values_only=True)

    @property
    def max_column(self) -> int:
        return self.ws.max_column

    def get(self, row: int, col: int) -> Any:
        return self.ws.cell(row=row, column=col).value

    def set(self, row: int, col: int, value: Any) -> None:
        self.ws.cell(row=row, column=col).value = value

    def add_header(self, row: int, col: int, text: str) -> None:
        cell = self.ws.cell(row=row, column=col)
        cell.value = text
        if col > 1:  # a new header looks like its neighbour (bold, fill, borders)
            cell._style = copy(self.ws.cell(row=row, column=col - 1)._style)

    def write(self, fh) -> None:
        self.book.save(fh)


class _CsvGrid:
    """A CSV file as a grid of values; empty fields read as None like empty cells do."""

    def __init__(self, path: Path):
        data = path.read_bytes()
        text, encoding = decode_text(data, path)
        if encoding == "utf-8-sig" and not data.startswith(b"\xef\xbb\xbf"):
            encoding = "utf-8"  # write back without a BOM the file did not have
        self.encoding = encoding
        self.newline = "\r\n" if "\r\n" in text[:65536] else "\n"
        try:
            self.dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t") if text.strip() else csv.excel
        except csv.Error:
            self.dialect = csv.excel
        self.cells: list[list[Any]] = [[v if v != "" else None for v in r]
                                       for r in csv.reader(io.StringIO(text, newline=""), self.dialect)]
        self.sheet_name = ""
        self.read_only = False

    def iter_rows(self, min_row: int = 1) -> Iterator[tuple]:
        return (tuple(r) for r in self.cells[min_row - 1:])

    @property
    def max_column(self) -> int:
        return max((len(r) for r in self.cells), default=0)

    def get(self, row: int, col: int) -> Any:
        cells = self.cells[row - 1] if row <= len(self.cells) else []
        return cells[col - 1] if col <= len(cells) else None

    def set(self, row: int, col: int, value: Any) -> None:
        while len(self.cells) < row:
            self.cells.append([])
        cells = self.cells[row - 1]
        cells.extend([None] * (col - len(cells)))
        cells[col - 1] = value

    def add_header(self, row: int, col: int, text: str) -> None:
        self.set(row, col, text)

    def write(self, fh) -> None:
        text = io.StringIO(newline="")
        writer = csv.writer(text, delimiter=self.dialect.delimiter, quotechar=self.dialect.quotechar or '"',
                            lineterminator=self.newline)
        writer.writerows([["" if v is None else v for v in r] for r in self.cells])
        fh.write(text.getvalue().encode(self.encoding))


class Workbook:
    """One sheet of a workbook with its header row located; see the module docstring."""

    def __init__(self, path: Path, grid: _XlsxGrid | _CsvGrid, columns: Mapping[str, str] | None):
        self.path = path
        self._grid = grid
        self.sheet = grid.sheet_name
        self.header_row, header = self._find_header(columns or {})
        # header text as written, by column; blank header cells are not columns
        self.headers: dict[int, str] = {c: str(v).strip() for c, v in enumerate(header, 1)
                                         if v is not None and str(v).strip()}
        self._by_name = {normalize_header(text): col for col, text in reversed(self.headers.items())}
        self.columns: dict[str, int] = {}
        for key in STANDARD_KEYS:
            col = self._by_name.get(normalize_header((columns or {}).get(key, key)))
            if col is not None:
                self.columns[key] = col
        unmatched = {k: h for k, h in (columns or {}).items() if k not in self.columns}
        if unmatched:  # a typo in --columns: say which header is not there, and which are
            key, header = next(iter(unmatched.items()))
            raise EditForgeError(f"--columns {key}={header}: no header {header!r} in row {self.header_row} of "
                                 f"{path.name}; its headers: {', '.join(self.headers.values()) or 'none'}")
        self.positional = not self.columns
        if self.positional:
            self.columns = dict(POSITIONAL_COLUMNS)

    def _find_header(self, overrides: Mapping[str, str]) -> tuple[int, tuple]:
        unknown = set(overrides) - set(STANDARD_KEYS)
        if unknown:
            raise EditForgeError(f"unknown column key(s) {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(STANDARD_KEYS)}")
        wanted = {normalize_header(overrides.get(k, k)) for k in STANDARD_KEYS}
        first_nonempty = None
        for number, values in enumerate(self._grid.iter_rows(), 1):
            if number > HEADER_SEARCH_ROWS:
                break
            if any(normalize_header(v) in wanted for v in values):
                return number, values
            if first_nonempty is None and any(v is not None and str(v).strip() for v in values):
                first_nonempty = (number, values)
        if first_nonempty is None:
            where = f"sheet {self.sheet!r} of " if self.sheet else ""
            raise EditForgeError(f"no header row in {where}{self.path.name}: the first rows are empty")
        return first_nonempty

    # -- reading ---------------------------------------------------------------------------------
    def column(self, name: str) -> int | None:
        """The 1-based column of a standard key or a header (case/space-insensitive), or None."""
        if name in self.columns:
            return self.columns[name]
        return self._by_name.get(normalize_header(name))

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every row below the header as (row number, {header text: value}), blank rows included."""
        columns = list(self.headers.items())
        for number, values in enumerate(self._grid.iter_rows(self.header_row + 1), self.header_row + 1):
            yield number, {text: values[c - 1] if c <= len(values) else None for c, text in columns}

    def records(self, names: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows below the header as (row number, {name: value}) for `names` (keys or headers)."""
        picks = [(name, self.column(name)) for name in names]
        for number, values in enumerate(self._grid.iter_rows(self.header_row + 1), self.header_row + 1):
            yield number, {name: values[c - 1] if c is not None and c <= len(values) else None
                           for name, c in picks}

    def get(self, row: int, name: str) -> Any:
        col = self.column(name)
        return None if col is None else self._grid.get(row, col)

    # -- writing ---------------------------------------------------------------------------------
    def ensure_column(self, name: str) -> int:
        """The column of `name`, creating it (header and all) after the last used column."""
        col = self.column(name)
        if col is None:
            col = max(self._grid.max_column, max(self.headers, default=0)) + 1
            self._grid.add_header(self.header_row, col, name)
            self.headers[col] = name
            self._by_name[normalize_header(name)] = col
        return col

    def set(self, row: int, name: str, value: Any) -> None:
        if self._grid.read_only:
            raise RuntimeError("this workbook was opened read-only")
        if row <= self.header_row:
            raise ValueError(f"row {row} is not below the header row {self.header_row}")
        self._grid.set(row, self.ensure_column(name), value)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically (temp + fsync + rename), keeping the previous file as `<name>.bak`."""
        if self._grid.read_only:
            raise RuntimeError("this workbook was opened read-only")
        target = Path(path) if path is not None else self.path
        ensure_not_locked(target)
        atomic_write(target, self._grid.write, backup=True)
        return target


def open_workbook(path: str | os.PathLike, *, sheet: str | None = None,
                  columns: Mapping[str, str] | None = None, read_only: bool = False) -> Workbook:
    """Open an .xlsx/.xlsm or .csv; `read_only` streams a big .xlsx faster but cannot save."""
    path = Path(path)
    if not path.is_file():
        raise EditForgeError(f"workbook not found: {path}")
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        grid: _XlsxGrid | _CsvGrid = _XlsxGrid(path, sheet, read_only)
    elif suffix == ".csv":
        if sheet is not None:
            raise EditForgeError(f"{path.name} is a CSV file; it has no sheets (drop --sheet)")
        grid = _CsvGrid(path)
    elif suffix == ".xls":
        raise EditForgeError(f"{path.name} is an old .xls file; save it as .xlsx in Excel first")
    else:
        raise EditForgeError(f"{path.name} is not a workbook: expected .xlsx, .xlsm or .csv")
    return Workbook(path, grid, columns)


def create_workbook(path: str | os.PathLike, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a new one-sheet workbook (.xlsx or .csv by suffix) with a header row; atomic."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        import openpyxl
        from openpyxl.styles import Font

        book = openpyxl.Workbook()
        ws = book.active
        ws.append(list(headers))
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in rows:
            ws.append(list(row))
        atomic_write(path, book.save)
    elif suffix == ".csv":
        def write(fh):
            text = io.StringIO(newline="")
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(headers)
            writer.writerows([["" if v is None else v for v in r] for r in rows])
            fh.write(text.getvalue().encode("utf-8"))
        atomic_write(path, write)
    else:
        raise EditForgeError(f"cannot create {path.name}: use a .xlsx or .csv name")
    return path
