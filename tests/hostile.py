"""A corpus of hostile and careless inputs, built on demand: every case is a command a user could run.

    case = CASES["xlsx-cells-bomb"]
    args = case.build(folder)          # writes the files under `folder`, returns `editforge` arguments

Each case says what it must give: `error` (exit code 2, no traceback, and one line on stderr: the
error; for cases refused only once the model is loaded, after the loading progress bars) or `row`
(the run goes on; the bad row or sample is reported with its reason).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import openpyxl

from tests.helpers import noise_image
from tests.xlsx import SHEET, rebuild

TINY = ["--model", "tiny-qwen-image-edit-2509", "--steps", "2", "--max-pixels", "4096"]
WORKBOOK_HEADERS = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "need_gen"]


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], list[str]]
    expect: str                 # "error" | "row"
    message: str                # a regular expression the output must contain
    fake_generator: bool = False
    max_seconds: float | None = None  # a bomb is refused before it costs anything
    after_load: bool = False          # refused once the model is loaded: its progress bars come first


def _workbook(folder: Path, rows: list[list], name: str = "book.xlsx") -> Path:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    noise_image(32, 32, 1).save(folder / "img" / "a.png")
    wb = openpyxl.Workbook()
    wb.active.append(WORKBOOK_HEADERS)
    for row in rows:
        wb.active.append(row)
    wb.save(folder / name)
    return folder / name


def _sheet_xml(rows: int, columns: int, dimension: str | None) -> Callable:
    """A package whose sheet part is `rows` x `columns` cells of `1`, streamed so it never sits in memory."""
    def write(path: Path) -> None:
        _workbook(path.parent, [], path.name)
        with zipfile.ZipFile(path) as src:
            parts = {info.filename: src.read(info.filename) for info in src.infolist()}
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
            for name, data in parts.items():
                if name != SHEET:
                    dst.writestr(name, data)
            with dst.open(SHEET, "w") as fh:
                fh.write(b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">')
                if dimension:
                    fh.write(f'<dimension ref="{dimension}"/>'.encode())
                fh.write(b"<sheetData>")
                row = b"<row>" + b"<c><v>1</v></c>" * columns + b"</row>"
                for _ in range(rows):
                    fh.write(row)
                fh.write(b"</sheetData></worksheet>")
    return write


def cells_bomb(folder: Path, dimension: str | None) -> list[str]:
    path = folder / "bomb.xlsx"
    _sheet_xml(3000, 1000, dimension)(path)  # 3 M cells
    assert path.stat().st_size < 200_000
    return ["synth", path, "--dry-run"]


def whitespace_bomb(folder: Path) -> list[str]:
    path = _workbook(folder, [])

    def pad(name: str, data: bytes) -> bytes:
        return data.replace(b"<sheetData>", b"<sheetData>" + b" " * (300 * 2**20)) if name == SHEET else data
    rebuild(path, pad)
    return ["synth", path, "--dry-run"]


def with_dtd(folder: Path) -> list[str]:
    path = _workbook(folder, [["img/a.png", None, None, None, "p", True]])
    entities = b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    rebuild(path, lambda name, data: data.replace(b"<worksheet", entities + b"<worksheet", 1) if name == SHEET else data)
    return ["dataset", "check", path]


def without_sheet(folder: Path) -> list[str]:
    path = _workbook(folder, [["img/a.png", None, None, None, "p", True]])
    rebuild(path, lambda name, data: None if name == SHEET else data)
    return ["synth", path, "--dry-run"]


def non_utf8_jsonl(folder: Path) -> list[str]:
    (folder / "data.jsonl").write_bytes(b'{"image_path": "a.png", "caption": "caf\xff\xfe"}\n')
    return ["dataset", "check", folder / "data.jsonl", "--source-format", "musubi"]


def number_as_path(folder: Path) -> list[str]:
    noise_image(32, 32, 1).save(folder / "c.png")
    (folder / "data.jsonl").write_text(json.dumps({"image_path": 5, "control_path_0": "c.png", "caption": "x"}) + "\n")
    return ["dataset", "export", folder / "data.jsonl", "--format", "musubi", "--out", folder / "out"]


def crafted_manifest(folder: Path) -> list[str]:
    for name, seed in (("t.png", 1), ("c.png", 2)):
        noise_image(32, 32, seed).save(folder / name)
    (folder / "metadata.json").write_text(json.dumps([{"image": "t.png", "edit_image": ["c.png"], "prompt": "p"}]))
    (folder.parent / "victim.txt").write_text("precious")
    (folder / "out").mkdir()
    (folder / "out" / ".editforge-export.json").write_text(json.dumps({"files": ["../../victim.txt"]}))
    return ["dataset", "export", folder / "metadata.json", "--format", "diffsynth", "--out", folder / "out"]


def formula_without_value(folder: Path) -> list[str]:
    return ["synth", _workbook(folder, [['="img/"&"a.png"', None, None, None, "make a reference", True]])]


def symlink_out(folder: Path) -> list[str]:
    noise_image(32, 32, 3).save(folder.parent / "private.png")
    path = _workbook(folder, [["img/link.png", None, None, None, "make a reference", True]])
    os.symlink(folder.parent / "private.png", folder / "img" / "link.png")
    return ["synth", path]


def thin_image(folder: Path) -> list[str]:
    noise_image(4, 4000, 1).save(folder / "thin.png")
    return ["edit", "--image", folder / "thin.png", "--prompt", "make it red", "--out", folder / "o.png", *TINY]


def long_prompt(folder: Path) -> list[str]:
    noise_image(64, 64, 1).save(folder / "in.png")
    words = " ".join(f"word{i}" for i in range(5000))
    return ["edit", "--image", folder / "in.png", "--prompt", words, "--out", folder / "o.png", *TINY]


def _train_config(folder: Path, **changes) -> Path:
    noise_image(32, 32, 1).save(folder / "t.png")
    noise_image(32, 32, 2).save(folder / "c.png")
    config = {"model": "tiny-qwen-image-edit-2509", "output_dir": str(folder / "run"),
              "data": {"samples": [{"target": str(folder / "t.png"), "controls": [str(folder / "c.png")],
                                    "instruction": "x"}], "max_pixels": 4096, "condition_pixels": 3136},
              "lora": {"rank": 4, "alpha": 4}, "train": {"steps": 1, "mixed_precision": "no",
                                                         "gradient_checkpointing": False},
              "checkpoint": {"every": 1}, "validation": {"every": 100}}
    for key, value in changes.items():
        section, _, leaf = key.partition(".")
        if leaf:
            config[section][leaf] = value
        else:
            config[section] = value
    (folder / "run.yaml").write_text(json.dumps(config))  # JSON is YAML
    return folder / "run.yaml"


def train_tiny_area(folder: Path) -> list[str]:
    return ["train", _train_config(folder, **{"data.max_pixels": 1})]


def train_output_is_a_file(folder: Path) -> list[str]:
    (folder / "a-file").write_text("not a folder")
    return ["train", _train_config(folder, output_dir=str(folder / "a-file"))]


def train_resume_other_rank(folder: Path) -> list[str]:
    import subprocess
    import sys

    config = _train_config(folder)
    first = subprocess.run([sys.executable, "-m", "editforge", "train", str(config)], capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    return ["train", config, "--resume", "latest", "--set", "lora.rank=8", "--set", "lora.alpha=8", "--set",
            "train.steps=2"]


def csv_not_utf8(folder: Path) -> list[str]:
    (folder / "book.csv").write_bytes(b"raw_image,gen_edit_prompt,need_gen\na.png,caf\xff,1\n")
    return ["synth", folder / "book.csv", "--dry-run"]


CASES = {
    "xlsx-cells-bomb": Case(lambda f: cells_bomb(f, "A1:ALL3000"), "error", r"declares a sheet of 3,000,000 cells "
                            r"\(A1:ALL3000 in xl/worksheets/sheet1.xml\), more than the limit of 2,000,000",
                            max_seconds=15),
    "xlsx-cells-bomb-lying": Case(lambda f: cells_bomb(f, "A1:A1"), "error",
                                  r"holds more than 2,000,000 cells in xl/worksheets/sheet1.xml, the limit; .*"
                                  "EDITFORGE_XLSX_MAX_CELLS", max_seconds=15),
    "xlsx-whitespace-bomb": Case(whitespace_bomb, "error",
                                 r"unpacks to 300 MB, more than the limit of 256 MB .*EDITFORGE_XLSX_MAX_BYTES",
                                 max_seconds=15),
    "xlsx-dtd": Case(with_dtd, "error", r"not a readable \.xlsx workbook: .*book\.xlsx \((DTD|Entities)Forbidden: "
                     r"its XML declares a DTD or entities, which EditForge does not parse\)"),
    "xlsx-without-sheet": Case(without_sheet, "error", r"not a readable \.xlsx workbook: .*\(it has no worksheet\)"),
    "jsonl-not-utf8": Case(non_utf8_jsonl, "error", r"data\.jsonl is not UTF-8 text; save it as UTF-8"),
    "csv-not-utf8": Case(csv_not_utf8, "error", r"book\.csv is not UTF-8 text; save it as UTF-8"),
    "jsonl-number-as-path": Case(number_as_path, "error",
                                 r"no sample can be exported \(1 given: line 1: not a path: 5 \(int, not text\)\)"),
    "export-crafted-manifest": Case(crafted_manifest, "error",
                                    r"\.editforge-export\.json is damaged \(entry '\.\./\.\./victim\.txt' is not a path "
                                    r"inside the export folder\); nothing was deleted"),
    "formula-without-value": Case(formula_without_value, "row", r"failed row 2: raw_image: the cell holds a formula "
                                  r"without a computed value \(=\"img/\"&\"a\.png\"\)", fake_generator=True),
    "symlink-out-of-base": Case(symlink_out, "row", r"failed row 2: raw_image: path leaves the base dir .* through a "
                                r"symlink \(use --allow-outside\): img/link\.png", fake_generator=True),
    "edit-4x4000-image": Case(thin_image, "error", r"a 4x4000 picture \(aspect 1000:1\) does not fit: at the output "
                              r"area of 4096 pixels the model takes aspect ratios up to about 14:1 \(crop it\)", after_load=True),
    "edit-5000-word-prompt": Case(long_prompt, "error", r"the prompt is \d+ tokens; qwen-image-edit-2509 reads at "
                                  r"most 1024 \(shorten it\)", after_load=True),
    "train-max-pixels-1": Case(train_tiny_area, "error", r"data\.max_pixels: Input should be greater than or equal "
                               r"to 4096"),
    "train-output-dir-is-a-file": Case(train_output_is_a_file, "error", r"output_dir: .*a-file is a file; give a folder"),
    "train-resume-other-rank": Case(train_resume_other_rank, "error", r"checkpoint does not match this LoRA: .* is "
                                    r"\(4, .*\) there, \(8, .*\) here; resume with the checkpoint's lora\.rank", after_load=True),
}
