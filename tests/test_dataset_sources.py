"""Reading every source format into samples: paths, control order, instructions, filtering, hostile paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editforge.dataset import Columns, load_samples
from editforge.errors import EditForgeError
from editforge.sheet.workbook import create_workbook
from tests.helpers import make_dataset_workbook, noise_image, write_image

def test_workbook_source_reads_targets_controls_instruction_and_extras(tmp_path):
    book = make_dataset_workbook(tmp_path, n=2, controls=2)
    data = load_samples(book)
    assert data.format == "workbook" and len(data.samples) == 2
    s = data.samples[0]
    assert s.key == "row 2"
    assert s.target == tmp_path / "imgs" / "t0.png"
    assert s.controls == (tmp_path / "imgs" / "r0_0.png", tmp_path / "imgs" / "r0_1.png")
    assert s.instruction == "make it shade 0"  # edit_prompt wins over gen_edit_prompt
    assert s.extra == {"category": "cat0"}  # bookkeeping (need_gen, gen_status, review) is not training data
    assert load_samples(book, columns=Columns(instruction="gen_edit_prompt")).samples[0].instruction == "gen 0"


def test_workbook_without_instruction_column_falls_back_to_gen_edit_prompt(tmp_path):
    write_image(tmp_path / "a.png", 1), write_image(tmp_path / "b.png", 2)
    book = create_workbook(tmp_path / "b.csv", ["raw_image", "ref_image_1", "gen_edit_prompt", "need_gen"],
                           [["a.png", "b.png", "turn it blue", "FALSE"]])
    (sample,) = load_samples(book).samples
    assert sample.instruction == "turn it blue" and sample.controls == (tmp_path / "b.png",)


def test_workbook_leaves_out_rejected_failed_and_unfinished_rows(tmp_path):
    for i in range(5):
        write_image(tmp_path / f"{i}.png", i)
    rows = [
        ["0.png", "1.png", "ok row", "done", "ok"],
        ["1.png", "2.png", "rejected by review", "done", "rejected"],
        ["2.png", "3.png", "generation failed", "failed: CUDA OOM", None],
        [None, "4.png", "waiting for its target", None, None],
        ["3.png", "4.png", "not reviewed yet", "done", None],
        [None, None, None, None, None],  # blank rows are not reported
    ]
    book = create_workbook(tmp_path / "b.xlsx", ["raw_image", "ref_image_1", "edit_prompt", "gen_status", "review"], rows)
    data = load_samples(book)
    assert [s.instruction for s in data.samples] == ["ok row", "not reviewed yet"]
    assert [k for k, _ in data.skipped] == ["row 3", "row 4", "row 5"]
    accepted = load_samples(book, only_accepted=True)
    assert [s.instruction for s in accepted.samples] == ["ok row"]
    assert ("row 6", "not reviewed as accepted") in accepted.skipped


def test_hostile_and_url_paths_are_flagged_not_followed(tmp_path):
    src = tmp_path / "ds"
    write_image(src / "a.png", 1)
    (src / "metadata.csv").write_text(
        "image,edit_image,prompt\n"
        "a.png,../../etc/passwd,climb out\n"
        "a.png,https://example.com/x.png,remote\n"
        "/abs/elsewhere.png,a.png,absolute and outside: synth's rule\n"
        f"{src / 'a.png'},a.png,absolute inside is fine\n"
    )
    samples = load_samples(src).samples
    assert "leaves the base dir" in samples[0].problems[0] and "../../etc/passwd" in samples[0].problems[0]
    assert "URL" in samples[1].problems[0]
    assert "leaves the base dir" in samples[2].problems[0] and "`allow_outside=True`" in samples[2].problems[0]
    assert samples[3].problems == () and samples[3].target == src / "a.png"
    allowed = load_samples(src, allow_outside=True).samples
    assert allowed[2].problems == () and allowed[2].target == Path("/abs/elsewhere.png")


def test_diffsynth_csv_json_and_list_cells(tmp_path):
    for name, seed in (("t.png", 1), ("c1.png", 2), ("c2.png", 3)):
        write_image(tmp_path / "img" / name, seed)
    (tmp_path / "metadata.json").write_text(json.dumps([
        {"image": "img/t.png", "edit_image": ["img/c1.png", "img/c2.png"], "prompt": "merge", "sample_id": 7},
        {"image": "img/t.png", "edit_image": "img/c1.png", "prompt": "single"},
    ]))
    data = load_samples(tmp_path / "metadata.json")
    assert data.format == "diffsynth"
    assert [len(s.controls) for s in data.samples] == [2, 1]
    assert data.samples[0].extra == {"sample_id": "7"}
    # A list written into a CSV cell (as pandas does) is still a list of controls.
    (tmp_path / "m.csv").write_text('image,edit_image,prompt\nimg/t.png,"[\'img/c1.png\', \'img/c2.png\']",merge\n')
    (sample,) = load_samples(tmp_path / "m.csv").samples
    assert sample.controls == (tmp_path / "img" / "c1.png", tmp_path / "img" / "c2.png")


def test_metadata_in_chinese_excel_encoding_or_not_text(tmp_path):
    write_image(tmp_path / "img" / "t.png", 1)
    write_image(tmp_path / "img" / "c.png", 2)
    (tmp_path / "metadata.csv").write_bytes("image,edit_image,prompt\nimg/t.png,img/c.png,把天空变成红色\n"
                                            .encode("gb18030"))
    (sample,) = load_samples(tmp_path / "metadata.csv").samples
    assert sample.instruction == "把天空变成红色"
    (tmp_path / "metadata.csv").write_bytes(b"\xff\xfe\x80\x80 binary")
    with pytest.raises(EditForgeError, match="metadata.csv"):  # one clear line, not a UnicodeDecodeError
        load_samples(tmp_path / "metadata.csv", source_format="diffsynth")


def test_musubi_jsonl_relative_to_its_folder_and_numbered_controls_in_order(tmp_path):
    for name, seed in (("t.png", 1), ("c0.png", 2), ("c1.png", 3), ("c10.png", 4)):
        write_image(tmp_path / name, seed)
    lines = [
        {"image_path": "t.png", "control_path_10": "c10.png", "control_path_0": "c0.png", "control_path_1": "c1.png",
         "caption": "three"},
        {"image_path": "t.png", "control_path": "c0.png", "caption": "bare control_path"},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    data = load_samples(tmp_path)
    assert data.format == "musubi"
    assert [p.name for p in data.samples[0].controls] == ["c0.png", "c1.png", "c10.png"]
    assert data.samples[1].controls == (tmp_path / "c0.png",)


def test_hf_parquet_with_ultraedit_columns_and_a_mapping(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(seed):
        buf = io.BytesIO()
        noise_image(32, 32, seed).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    table = pa.table({
        "source_image": [png(1), png(2)], "edited_image": [png(3), png(4)],
        "edit_prompt": ["add a hat", "remove the hat"], "clip_sim_dir": [0.25, 0.5], "idx": [10, 11],
    })
    pq.write_table(table, tmp_path / "ultra.parquet")
    data = load_samples(tmp_path / "ultra.parquet")
    assert data.format == "hf" and [s.instruction for s in data.samples] == ["add a hat", "remove the hat"]
    s = data.samples[0]
    assert s.target.read_bytes() == png(3)["bytes"] and s.controls[0].read_bytes() == png(1)["bytes"]
    assert s.extra == {"clip_sim_dir": "0.25", "idx": "10"}
    swapped = load_samples(tmp_path / "ultra.parquet",
                           columns=Columns(target="source_image", controls=("edited_image",), instruction="edit_prompt"))
    assert swapped.samples[0].target.read_bytes() == png(1)["bytes"]
    with pytest.raises(EditForgeError, match="no column 'nope'"):
        load_samples(tmp_path / "ultra.parquet", columns=Columns(instruction="nope"))


def test_folder_layout_pairs_by_stem_and_reads_captions(tmp_path):
    write_image(tmp_path / "images" / "a.png", 1)
    write_image(tmp_path / "images" / "b.jpg", 2, fmt="JPEG")
    (tmp_path / "images" / "a.txt").write_text("first\n")
    write_image(tmp_path / "reference_2" / "a.png", 3)
    write_image(tmp_path / "reference_1" / "a.webp", 4, fmt="WEBP")
    write_image(tmp_path / "reference_1" / "b.png", 5)
    data = load_samples(tmp_path)
    assert data.format == "folders"
    a, b = data.samples
    assert a.instruction == "first" and b.instruction == ""
    assert [p.parent.name for p in a.controls] == ["reference_1", "reference_2"]  # folder number order
    assert b.controls == (tmp_path / "reference_1" / "b.png",)


def test_unknown_or_missing_sources_fail_with_one_clear_error(tmp_path):
    with pytest.raises(EditForgeError, match="dataset not found"):
        load_samples(tmp_path / "nope")
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(EditForgeError, match="not a dataset EditForge reads"):
        load_samples(tmp_path / "notes.md")
    with pytest.raises(EditForgeError, match="unknown source format"):
        load_samples(tmp_path, source_format="kohya")
    book = make_dataset_workbook(tmp_path / "w", n=1)
    with pytest.raises(EditForgeError, match="no column 'prompt_x'"):
        load_samples(book, columns=Columns(instruction="prompt_x"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EditForgeError, match="not valid JSON"):
        load_samples(tmp_path / "bad.json")
