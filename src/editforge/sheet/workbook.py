"""The user's annotation workbook (.xlsx/.xlsm via openpyxl, or .csv), read and written in place.

    from editforge.sheet.workbook import open_workbook, create_workbook

    book = open_workbook("data.xlsx", sheet=None, columns={"gen_edit_prompt": "Prompt"})
    book.columns                      # {"raw_image": 1, "ref_image_1": 2, ...}: standard key -> column
    for row, values in book.rows():   # row: the sheet's 1-based row number; values: {header: value}
        ...
    for row, values in book.records(["raw_image", "need_gen"]):   # only these, faster on big sheets
        ...
    book.get(12, "review")            # by standard key or header text (case/space-insensitive)
    book.row_id(12), book.row_of(id)  # the row's identity (column editforge_id) and back
    book.set(12, "review", "ok")      # a missing column is created after the last used one
    book.save()                       # atomic: temp file + rename, the previous file kept as `.bak`

    create_workbook("new.xlsx", ["raw_image", "gen_edit_prompt"], [["a.png", "make it red"]])

Header detection: the header is the first of the top rows that names a standard column
(`raw_image, ref_image_1..3, gen_edit_prompt, need_gen`; case, surrounding spaces, inner spaces and
hyphens ignored, `columns={key: header}` renames one). A sheet whose header names none of them gets
the positions of the original script: A raw, B-D refs, E prompt, G need_gen, header in the first row.

Row identity: every non-blank row below the header has an id in the `editforge_id` column, which
EditForge fills once (at its first save of the workbook) and which travels with the row through
sorts and inserts. A row without one, or a pasted copy repeating an id above it, gets a new id:
`ef` + a hash of the sheet and the row's position then, so two copies of one workbook get the same ids
(and synth the same seeds). A read-only open assigns them in memory the same way.

Values: a formula cell reads as the value Excel computed and cached in the file. A program that saves
an .xlsx (openpyxl, so EditForge too) drops every cached value; `memory` (the synth journal) then
supplies the value read earlier for the same row, column and formula text. With neither, the cell
reads as `Uncomputed(formula)`, and whoever needs the value fails that row with one line.
Everything EditForge writes is a value, never a formula: text starting with `=` is stored as text.

Everything the caller does not write stays as it was: openpyxl keeps formulas as formulas, and styles,
widths, comments and other sheets are saved back untouched. CSV keeps its encoding (UTF-8 with or
without BOM, or GB18030 as Chinese Excel writes it), delimiter and line ends.

A workbook open in Excel or LibreOffice (lock file `~$name` / `.~lock.name#` beside it) is refused
by `save()` and by `ensure_not_locked()` with an `EditForgeError`, because saving under Excel's feet
loses either its edits or ours. `save()` also refuses (`WorkbookChanged`) when the file on disk is no
longer the one that was read: the caller re-reads it and writes its cells into that version
(`editforge.sheet.render.SheetWriter`).

An .xlsx is checked before openpyxl parses it (`XlsxLimits`): declared sheet dimensions, cells and
unpacked size, so a 100 KB zip bomb is refused in milliseconds instead of taking gigabytes. XML is
parsed with defusedxml (which openpyxl uses when it is installed): no DTDs, no entity expansion.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import zipfile
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence

from editforge.errors import EditForgeError
from editforge.files import atomic_write, decode_text
from editforge.sheet.schema import POSITIONAL_COLUMNS, ROW_ID, STANDARD_KEYS, cell_text, normalize_header

HEADER_SEARCH_ROWS = 20
XLSX_SUFFIXES = (".xlsx", ".xlsm")


class WorkbookChanged(EditForgeError):
    """The file on disk changed since it was read; writing now would replace someone's save."""


class Uncomputed:
    """A formula cell without a computed value (the file was last saved by a program, not Excel)."""

    def __init__(self, formula: str):
        self.formula = formula

    def __str__(self) -> str:
        return self.formula

    def __repr__(self) -> str:
        return f"Uncomputed({self.formula!r})"

    def reason(self, column: str) -> str:
        return (f"{column}: the cell holds a formula without a computed value ({self.formula}); "
                "open and save the workbook in Excel or LibreOffice, or type the value")


class FormulaMemory(Protocol):
    """Values read from formula cells, kept across saves that drop them (the synth journal)."""

    def formula_values(self, sheet: str) -> dict[tuple[str, str], tuple[str, Any]]: ...
    def remember_formulas(self, sheet: str, entries: list[tuple[str, str, str, Any]]) -> None: ...


# -- checks before parsing ------------------------------------------------------------------------

MAX_CELLS_ENV = "EDITFORGE_XLSX_MAX_CELLS"
MAX_BYTES_ENV = "EDITFORGE_XLSX_MAX_BYTES"
_CELL = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?c[\s>/]")
_FORMULA = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?f[\s>/]")
_DIMENSION = re.compile(rb'<(?:[A-Za-z_][\w.-]*:)?dimension\s+ref="\$?([A-Z]+)\$?(\d+)(?::\$?([A-Z]+)\$?(\d+))?"')


@dataclass(frozen=True)
class XlsxLimits:
    """What an .xlsx may hold before EditForge parses it. 2 M cells take ~1.5 GB in openpyxl."""

    max_cells: int = 2_000_000       # per sheet, declared or counted
    max_bytes: int = 256 * 2**20     # all parts, unpacked

    @classmethod
    def from_env(cls) -> "XlsxLimits":
        values = {}
        for name, env in (("max_cells", MAX_CELLS_ENV), ("max_bytes", MAX_BYTES_ENV)):
            text = os.environ.get(env)
            if text:
                try:
                    values[name] = int(text)
                except ValueError:
                    raise EditForgeError(f"{env} must be a whole number, not {text!r}") from None
        return cls(**values)


def check_package(path: Path, limits: XlsxLimits) -> bool:
    """Refuse an .xlsx past `limits`; returns whether any sheet holds formulas. Streams, never parses."""
    try:
        package = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise EditForgeError(f"not a readable .xlsx workbook: {path} ({exc.__class__.__name__})") from exc
    has_formulas = False
    with package:
        unpacked = sum(info.file_size for info in package.infolist())
        if unpacked > limits.max_bytes:
            raise EditForgeError(
                f"{path.name} unpacks to {unpacked / 2**20:,.0f} MB, more than the limit of "
                f"{limits.max_bytes / 2**20:,.0f} MB (a zip bomb?); if the workbook is genuine, raise "
                f"{MAX_BYTES_ENV}")
        for info in package.infolist():
            if info.filename.startswith("xl/") and info.filename.endswith(".xml"):
                has_formulas = _count_cells(package, info, path, limits) or has_formulas
    return has_formulas


def _count_cells(package: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limits: XlsxLimits) -> bool:
    """Refuse a part past the cell limit (declared or counted); returns whether it holds formulas."""
    cells, formulas, carry, first = 0, False, b"", True
    try:
        with package.open(info) as fh:
            while chunk := fh.read(1 << 20):
                if first:
                    _check_dimension(chunk, info.filename, path, limits)
                    first = False
                buf = carry + chunk
                cut = buf.rfind(b"<")
                # a tag that starts near the end may continue in the next chunk: keep it for then
                cut = cut if cut != -1 and len(buf) - cut < 64 else len(buf)
                part, carry = buf[:cut], buf[cut:]
                cells += len(_CELL.findall(part))
                formulas = formulas or _FORMULA.search(part) is not None
                if cells > limits.max_cells:
                    raise EditForgeError(
                        f"{path.name} holds more than {limits.max_cells:,} cells in {info.filename}, the "
                        f"limit; if the workbook is genuine, raise {MAX_CELLS_ENV}")
            cells += len(_CELL.findall(carry))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise EditForgeError(f"not a readable .xlsx workbook: {path} ({exc.__class__.__name__})") from exc
    return formulas or _FORMULA.search(carry) is not None


def _check_dimension(head: bytes, part: str, path: Path, limits: XlsxLimits) -> None:
    found = _DIMENSION.search(head)
    if found is None:
        return
    first_col, first_row, last_col, last_row = found.groups()
    last_col, last_row = last_col or first_col, last_row or first_row
    cells = (abs(_column_number(last_col) - _column_number(first_col)) + 1) * (abs(int(last_row) - int(first_row)) + 1)
    if cells > limits.max_cells:
        ref = found.group(0).split(b'"')[1].decode()
        raise EditForgeError(
            f"{path.name} declares a sheet of {cells:,} cells ({ref} in {part}), more than the limit of "
            f"{limits.max_cells:,}; if the workbook is genuine, raise {MAX_CELLS_ENV}")


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + letter - 64
    return number


# -- locks and files --------------------------------------------------------------------------------

def lock_file(path: str | os.PathLike) -> Path | None:
    """The Excel/LibreOffice lock file that says `path` is open in an editor, if there is one."""
    path = Path(path)
    # Excel: "~$" + name; for long names Word-style owner files drop the first two characters.
    for name in (f"~${path.name}", f"~${path.name[2:]}", f".~lock.{path.name}#"):
        candidate = path.with_name(name)
        if candidate.exists():
            return candidate
    return None


def ensure_not_locked(*paths: str | os.PathLike) -> None:
    """Refuse while any spelling of the workbook (a symlink and its target) is open in an editor."""
    for path in paths:
        lock = lock_file(path)
        if lock is not None:
            raise EditForgeError(
                f"{Path(path).name} is open in Excel or LibreOffice (lock file {lock.name}); "
                "close it and run again"
            )


def workbook_file(path: str | os.PathLike) -> Path:
    """The workbook file itself, symlinks followed: locks, journal and saves go by this one path."""
    real = Path(os.path.realpath(path))
    if not real.is_file():
        raise EditForgeError(f"workbook not found: {path}")
    return real


def file_stamp(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


# -- grids ------------------------------------------------------------------------------------------

def _as_text(cell) -> None:
    """Text that openpyxl took for a formula (`=HYPERLINK(...)`) is stored as text, shown as typed."""
    if cell.data_type == "f" and isinstance(cell.value, str):
        cell.data_type = "s"
        cell.quotePrefix = True  # Excel keeps it text when someone edits the cell


class _XlsxGrid:
    """One worksheet of an openpyxl workbook as a grid of values."""

    def __init__(self, path: Path, sheet: str | None, read_only: bool, limits: XlsxLimits):
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException

        self.path = path
        self.has_formulas = check_package(path, limits)
        try:
            self.book = openpyxl.load_workbook(
                path, read_only=read_only, keep_vba=path.suffix.lower() == ".xlsm",
                keep_links=True, rich_text=not read_only,
            )
        except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError,
                OSError, SyntaxError) as exc:
            raise EditForgeError(f"not a readable .xlsx workbook: {path} ({_why(exc)})") from exc
        if sheet is None:
            self.ws = self.book.active
            if self.ws is None:
                raise EditForgeError(f"not a readable .xlsx workbook: {path} (it has no worksheet)")
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
        cell = self.ws.cell(row=row, column=col)
        cell.value = value
        _as_text(cell)

    def add_header(self, row: int, col: int, text: str) -> None:
        cell = self.ws.cell(row=row, column=col)
        cell.value = text
        if col > 1:  # a new header looks like its neighbour (bold, fill, borders)
            cell._style = copy(self.ws.cell(row=row, column=col - 1)._style)

    def formula_cells(self) -> dict[tuple[int, int], str]:
        """(row, column) -> formula text of every formula cell."""
        if not self.has_formulas:
            return {}
        if self.read_only:
            cells = ((c.row, c.column, c) for row in self.ws.iter_rows() for c in row if c.data_type == "f")
        else:
            cells = ((r, col, c) for (r, col), c in self.ws._cells.items() if c.data_type == "f")
        return {(r, col): getattr(c.value, "text", None) or str(c.value) for r, col, c in cells}

    def cached_values(self, cells: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Any]:
        """The values Excel computed for `cells`, from a second, value-only read of the file."""
        import openpyxl

        wanted: dict[int, list[int]] = {}
        for row, col in cells:
            wanted.setdefault(row, []).append(col)
        if not wanted:
            return {}
        book = openpyxl.load_workbook(self.path, read_only=True, data_only=True, keep_links=True)
        try:
            values = {}
            rows = book[self.sheet_name].iter_rows(min_row=min(wanted), max_row=max(wanted), values_only=True)
            for number, row in enumerate(rows, min(wanted)):
                for col in wanted.get(number, ()):
                    values[number, col] = row[col - 1] if col <= len(row) else None
            return values
        finally:
            book.close()

    def write(self, fh) -> None:
        self.book.save(fh)


def _why(exc: BaseException) -> str:
    """The root cause of an openpyxl failure: it wraps parser errors (a DTD, bad XML) in ValueError."""
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    name = cause.__class__.__name__
    if name in ("DTDForbidden", "EntitiesForbidden", "ExternalReferenceForbidden"):
        return f"{name}: its XML declares a DTD or entities, which EditForge does not parse"
    return name


class _CsvGrid:
    """A CSV file as a grid of values; empty fields read as None like empty cells do."""

    has_formulas = False

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

    def formula_cells(self) -> dict[tuple[int, int], str]:
        return {}  # a CSV holds text; `=...` in it is data

    def write(self, fh) -> None:
        text = io.StringIO(newline="")
        writer = csv.writer(text, delimiter=self.dialect.delimiter, quotechar=self.dialect.quotechar or '"',
                            lineterminator=self.newline)
        writer.writerows([["" if v is None else v for v in r] for r in self.cells])
        fh.write(text.getvalue().encode(self.encoding))


# -- the workbook -----------------------------------------------------------------------------------

class Workbook:
    """One sheet of a workbook with its header row located; see the module docstring."""

    def __init__(self, path: Path, grid: _XlsxGrid | _CsvGrid, columns: Mapping[str, str] | None, *,
                 stamp: tuple[int, int, int], memory: FormulaMemory | None = None, aliases: Sequence[Path] = ()):
        self.path = path
        self.stamp = stamp               # the file as it was read: (mtime_ns, size, inode)
        self.aliases = tuple(aliases)    # other names of the file (a symlink it was opened through)
        self._grid = grid
        self._memory = memory
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
            raise EditForgeError(f"`columns` {key}={header}: no header {header!r} in row {self.header_row} of "
                                 f"{path.name}; its headers: {', '.join(self.headers.values()) or 'none'}")
        self.positional = not self.columns
        if self.positional:
            self.columns = dict(POSITIONAL_COLUMNS)
        self._ids: dict[int, str] | None = None      # row -> id, built on first use
        self._rows: dict[str, int] = {}              # id -> row (the first row holding it)
        self._new_ids: dict[int, str] = {}           # ids assigned in memory, not in a cell yet
        self._values: dict[tuple[int, int], Any] | None = None  # formula cells' values, built on first use

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

    def _raw_rows(self) -> Iterator[tuple[int, tuple]]:
        return enumerate(self._grid.iter_rows(self.header_row + 1), self.header_row + 1)

    def _value(self, row: int, col: int, raw: Any) -> Any:
        values = self._formula_values()
        return values.get((row, col), raw) if values else raw

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every row below the header as (row number, {header text: value}), blank rows included."""
        columns = list(self.headers.items())
        for number, values in self._raw_rows():
            yield number, {text: self._value(number, c, values[c - 1]) if c <= len(values) else None
                           for c, text in columns}

    def records(self, names: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows below the header as (row number, {name: value}) for `names` (keys or headers).

        The first full pass also indexes the row ids (a big read-only sheet is not parsed twice); they
        are known once it ends.
        """
        picks = [(name, self.column(name)) for name in names]
        index = _IdIndex(self.sheet, self.column(ROW_ID)) if self._ids is None else None
        for number, values in self._raw_rows():
            if index is not None:
                index.add(number, values)
            yield number, {name: self._value(number, c, values[c - 1]) if c is not None and c <= len(values)
                           else None for name, c in picks}
        if index is not None and self._ids is None:
            self._ids, self._rows, self._new_ids = index.finish()

    def get(self, row: int, name: str) -> Any:
        col = self.column(name)
        return None if col is None else self._value(row, col, self._grid.get(row, col))

    # -- row identity ------------------------------------------------------------------------------
    def row_id(self, row: int) -> str | None:
        """The id of `row` (None for a blank row)."""
        if self._ids is None:
            self._index_ids()
        return self._ids.get(row)

    def row_of(self, row_id: str) -> int | None:
        """The row holding `row_id` now, or None if no row does (it was deleted)."""
        if self._ids is None:
            self._index_ids()
        return self._rows.get(row_id)

    def _index_ids(self) -> None:
        index = _IdIndex(self.sheet, self.column(ROW_ID))
        for number, values in self._raw_rows():
            index.add(number, values)
        self._ids, self._rows, self._new_ids = index.finish()

    def fill_row_ids(self) -> int:
        """Write the ids assigned in memory into their cells; how many were written."""
        if self._ids is None:
            self._index_ids()
        if not self._new_ids:
            return 0
        col = self.ensure_column(ROW_ID)
        for number, row_id in self._new_ids.items():
            self._grid.set(number, col, row_id)
        written, self._new_ids = len(self._new_ids), {}
        return written

    # -- formulas ----------------------------------------------------------------------------------
    def _formula_values(self) -> dict[tuple[int, int], Any]:
        if self._values is None:
            self._values = {}
            formulas = self._grid.formula_cells()
            if formulas:
                self._values = self._resolve(formulas)
        return self._values

    def _resolve(self, formulas: dict[tuple[int, int], str]) -> dict[tuple[int, int], Any]:
        cached = self._grid.cached_values(formulas)
        known = self._memory.formula_values(self.sheet) if self._memory is not None else {}
        values, learned = {}, []
        for (row, col), formula in formulas.items():
            column, row_id = normalize_header(self.headers.get(col, str(col))), self.row_id(row)
            value = cached.get((row, col))
            if value is not None:
                if row_id is not None and known.get((row_id, column)) != (formula, value):
                    learned.append((row_id, column, formula, value))
            else:
                remembered = known.get((row_id, column))
                value = remembered[1] if remembered is not None and remembered[0] == formula else Uncomputed(formula)
            values[row, col] = value
        if learned and self._memory is not None:
            self._memory.remember_formulas(self.sheet, learned)
        return values

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
        col = self.ensure_column(name)
        self._grid.set(row, col, value)
        if self._values:
            self._values.pop((row, col), None)  # a value written over a formula is just that value

    def changed_on_disk(self) -> bool:
        try:
            return file_stamp(self.path) != self.stamp
        except FileNotFoundError:
            return True

    def save(self) -> Path:
        """Write atomically (temp + fsync + rename), keeping the previous file as `<name>.bak`.

        Refuses while an editor has the file open, and with `WorkbookChanged` when the file on disk
        is not the one read (checked again right before the rename).
        """
        if self._grid.read_only:
            raise RuntimeError("this workbook was opened read-only")
        ensure_not_locked(self.path, *self.aliases)

        def unchanged() -> None:
            if self.changed_on_disk():
                raise WorkbookChanged(f"{self.path.name} changed on disk since EditForge read it")

        unchanged()
        atomic_write(self.path, self._grid.write, backup=True, before_replace=unchanged)
        self.stamp = file_stamp(self.path)
        return self.path


class _IdIndex:
    """Row ids from one pass over the rows: ids found first, new ones for the rest once all are known
    (a new row inserted above a moved one must not take the id the moved one still has)."""

    def __init__(self, sheet: str, col: int | None):
        self.sheet, self.col = sheet, col
        self.ids: dict[int, str] = {}
        self.rows: dict[str, int] = {}
        self.needing: list[int] = []

    def add(self, number: int, values: tuple) -> None:
        if not any(v is not None and str(v).strip() for v in values):
            return  # blank rows are layout: no id
        text = cell_text(values[self.col - 1]) if self.col is not None and self.col <= len(values) else ""
        if text and text not in self.rows:
            self.ids[number], self.rows[text] = text, number
        else:  # no id yet, or a pasted copy of a row above it
            self.needing.append(number)

    def finish(self) -> tuple[dict[int, str], dict[str, int], dict[int, str]]:
        new = {}
        for number in self.needing:
            row_id = _new_row_id(self.sheet, number, self.rows)
            self.ids[number], self.rows[row_id], new[number] = row_id, number, row_id
        return self.ids, self.rows, new


def _new_row_id(sheet: str, row: int, taken: Mapping[str, int]) -> str:
    for attempt in range(1000):
        digest = hashlib.blake2b(f"{sheet}\x00{row}\x00{attempt}".encode(), digest_size=5).hexdigest()
        if f"ef{digest}" not in taken:
            return f"ef{digest}"
    raise RuntimeError("no free row id")  # 1000 collisions in a 40-bit space: not a real sheet


def open_workbook(path: str | os.PathLike, *, sheet: str | None = None, columns: Mapping[str, str] | None = None,
                  read_only: bool = False, memory: FormulaMemory | None = None,
                  limits: XlsxLimits | None = None) -> Workbook:
    """Open an .xlsx/.xlsm or .csv; `read_only` streams a big .xlsx faster but cannot save.

    A symlink is followed: the returned workbook's `path` is the file itself.
    """
    given = Path(path)
    path = workbook_file(given)
    stamp = file_stamp(path)  # before reading: a save made while we read shows as a change
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        grid: _XlsxGrid | _CsvGrid = _XlsxGrid(path, sheet, read_only, limits or XlsxLimits.from_env())
    elif suffix == ".csv":
        if sheet is not None:
            raise EditForgeError(f"{path.name} is a CSV file; it has no sheets (drop `sheet`)")
        grid = _CsvGrid(path)
    elif suffix == ".xls":
        raise EditForgeError(f"{path.name} is an old .xls file; save it as .xlsx in Excel first")
    else:
        raise EditForgeError(f"{path.name} is not a workbook: expected .xlsx, .xlsm or .csv")
    aliases = [given] if Path(os.path.abspath(given)) != path else []
    book = Workbook(path, grid, columns, stamp=stamp, memory=memory, aliases=aliases)
    book._formula_values()  # now: the cached values are in this file, not in the one our first save writes
    return book


def create_workbook(path: str | os.PathLike, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a new one-sheet workbook (.xlsx or .csv by suffix) with a header row; atomic.

    Every value is stored as a value: text such as `=HYPERLINK(...)` stays text in an .xlsx. A CSV
    cannot mark text as text; Excel runs `=...` in a CSV it opens (see docs/dataset.md).
    """
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
            _as_text(cell)
        for row in rows:
            ws.append(list(row))
            for cell in ws[ws.max_row]:
                _as_text(cell)
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
