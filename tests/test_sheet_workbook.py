"""Workbook I/O: header detection, reading and writing cells, atomic saves, what must survive."""

from __future__ import annotations

import openpyxl
import pytest
from openpyxl.comments import Comment
from openpyxl.styles import Font, PatternFill

from editforge.errors import EditForgeError
from editforge.sheet.workbook import create_workbook, ensure_not_locked, open_workbook

STANDARD = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "instruction", "need_gen"]


def test_headers_found_by_name_ignoring_case_spaces_and_order(tmp_path):
    path = create_workbook(tmp_path / "a.xlsx", ["note", " NEED_GEN ", "Gen Edit Prompt", "Raw_Image",
                                                 "ref image 1", "REF_IMAGE_2", "ref-image-3"], [])
    book = open_workbook(path)
    assert book.columns == {"need_gen": 2, "gen_edit_prompt": 3, "raw_image": 4, "ref_image_1": 5,
                            "ref_image_2": 6, "ref_image_3": 7}
    assert not book.positional


def test_header_row_below_a_title_and_column_override(tmp_path):
    path = tmp_path / "a.xlsx"
    wb = openpyxl.Workbook()
    wb.active.append(["My dataset, 2025"])
    wb.active.append([])
    wb.active.append(["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "Prompt", "todo"])
    wb.active.append(["a.png", None, None, None, "p", True])
    wb.save(path)
    book = open_workbook(path, columns={"gen_edit_prompt": "prompt", "need_gen": "TODO"})
    assert book.header_row == 3
    assert book.columns["gen_edit_prompt"] == 5 and book.columns["need_gen"] == 6
    assert list(book.records(["raw_image", "need_gen"])) == [(4, {"raw_image": "a.png", "need_gen": True})]


def test_unknown_override_key_is_a_user_error(tmp_path):
    path = create_workbook(tmp_path / "a.csv", STANDARD, [])
    with pytest.raises(EditForgeError, match="unknown column key"):
        open_workbook(path, columns={"prompt": "x"})


def test_positional_fallback_when_header_names_nothing(tmp_path):
    path = create_workbook(tmp_path / "a.xlsx", ["样本图", "参考1", "参考2", "参考3", "生成指令", "训练指令", "需要生成"],
                           [["a.png", None, None, None, "p", "t", True]])
    book = open_workbook(path)
    assert book.positional and book.header_row == 1
    assert book.columns == {"raw_image": 1, "ref_image_1": 2, "ref_image_2": 3, "ref_image_3": 4,
                            "gen_edit_prompt": 5, "need_gen": 7}
    assert book.get(2, "need_gen") is True and book.get(2, "生成指令") == "p"


def test_rows_give_every_header_and_keep_blank_rows(tmp_path):
    path = create_workbook(tmp_path / "a.xlsx", ["raw_image", "extra"], [["a.png", 1], [None, None], ["b.png", 2.5]])
    assert list(open_workbook(path).rows()) == [
        (2, {"raw_image": "a.png", "extra": 1}), (3, {"raw_image": None, "extra": None}),
        (4, {"raw_image": "b.png", "extra": 2.5})]


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_set_creates_a_column_after_the_last_used_one(tmp_path, suffix):
    path = create_workbook(tmp_path / f"a{suffix}", ["raw_image", "need_gen"], [["a.png", "TRUE"], ["b.png", "no"]])
    book = open_workbook(path)
    book.set(3, "review", "ok")
    book.set(2, "Raw Image", "c.png")  # by header, case/space-insensitive
    book.save()
    again = open_workbook(path)
    assert again.column("review") == 3
    assert [v for _, v in again.rows()] == [{"raw_image": "c.png", "need_gen": "TRUE", "review": None},
                                            {"raw_image": "b.png", "need_gen": "no", "review": "ok"}]


def test_save_is_atomic_and_keeps_one_backup(tmp_path):
    path = create_workbook(tmp_path / "a.xlsx", ["raw_image"], [["a.png"]])
    for value in ("b.png", "c.png"):
        book = open_workbook(path)
        book.set(2, "raw_image", value)
        book.save()
    assert open_workbook(path).get(2, "raw_image") == "c.png"
    with open(tmp_path / "a.xlsx.bak", "rb") as fh:  # the previous save
        assert openpyxl.load_workbook(fh).active["A2"].value == "b.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xlsx", "a.xlsx.bak"]  # no temp files


def test_everything_not_written_survives_a_save(tmp_path):
    path = tmp_path / "a.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "data"
    ws.append(STANDARD + ["total"])
    ws.append(["a.png", None, None, None, "make it red", "instr", True, "=LEN(E2)"])
    ws.append([])
    ws.append(["b.png", None, None, None, "make it blue", "instr", False, "=LEN(E4)"])
    ws["A1"].font = Font(bold=True, color="FF0000")
    ws["E2"].fill = PatternFill("solid", fgColor="FFFF00")
    ws.column_dimensions["E"].width = 42
    ws["E2"].comment = Comment("check this prompt", "annotator")
    wb.create_sheet("notes")["A1"] = "keep me"
    wb.save(path)

    book = open_workbook(path, sheet="data")
    book.set(2, "gen_status", "done")
    book.save()

    wb = openpyxl.load_workbook(path)
    ws = wb["data"]
    assert ws["H2"].value == "=LEN(E2)" and ws["H4"].value == "=LEN(E4)"
    assert ws["A1"].font.bold and ws["A1"].font.color.rgb == "00FF0000"
    assert ws["E2"].fill.fgColor.rgb == "00FFFF00"
    assert ws.column_dimensions["E"].width == 42
    assert ws["E2"].comment.text == "check this prompt"
    assert wb["notes"]["A1"].value == "keep me"
    assert [c.value for c in ws[3]][:7] == [None] * 7  # the blank row stays blank
    assert ws["I1"].value == "gen_status" and ws["I1"].font.bold is False  # styled like H1, its neighbour
    assert ws["I2"].value == "done"


def test_csv_keeps_encoding_delimiter_and_line_ends(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffraw_image;gen_edit_prompt;need_gen\r\nа.png;把天空变红;TRUE\r\n".encode("utf-8"))
    book = open_workbook(path)
    book.set(2, "need_gen", "FALSE")
    book.save()
    assert path.read_bytes() == "\ufeffraw_image;gen_edit_prompt;need_gen\r\nа.png;把天空变红;FALSE\r\n".encode()


def test_csv_from_chinese_excel_in_gb18030(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("raw_image,gen_edit_prompt,need_gen\na.png,把天空变红,1\n".encode("gb18030"))
    book = open_workbook(path)
    assert book.get(2, "gen_edit_prompt") == "把天空变红"
    book.save()
    assert path.read_bytes().decode("gb18030").startswith("raw_image,")


@pytest.mark.parametrize("lock_name", ["~$a.xlsx", ".~lock.a.xlsx#"])
def test_workbook_open_in_excel_is_refused_before_writing(tmp_path, lock_name):
    path = create_workbook(tmp_path / "a.xlsx", ["raw_image"], [["a.png"]])
    before = path.read_bytes()
    (tmp_path / lock_name).write_bytes(b"owner")
    book = open_workbook(path)  # reading is fine
    book.set(2, "raw_image", "b.png")
    with pytest.raises(EditForgeError, match="open in Excel"):
        book.save()
    with pytest.raises(EditForgeError, match="close it"):
        ensure_not_locked(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("name, content, message", [
    ("a.xlsx", b"this is not a zip", "not a readable .xlsx"),
    ("a.xls", b"\xd0\xcf\x11\xe0", "old .xls"),
    ("a.txt", b"raw_image\n", "not a workbook"),
    ("missing.xlsx", None, "workbook not found"),
    ("empty.csv", b"\n\n", "no header row"),
])
def test_bad_workbooks_are_user_errors(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(EditForgeError, match=message):
        open_workbook(tmp_path / name)


def test_missing_sheet_names_the_sheets_there_are(tmp_path):
    path = create_workbook(tmp_path / "a.xlsx", ["raw_image"], [])
    with pytest.raises(EditForgeError, match="no sheet 'data'.*Sheet"):
        open_workbook(path, sheet="data")


def test_read_only_streams_but_cannot_write(tmp_path):
    path = create_workbook(tmp_path / "a.xlsx", ["raw_image"], [["a.png"]])
    book = open_workbook(path, read_only=True)
    assert list(book.rows()) == [(2, {"raw_image": "a.png"})]
    with pytest.raises(RuntimeError):
        book.set(2, "raw_image", "b.png")
