"""Exported layouts match what each trainer's loader reads, round-trip back, and re-export idempotently."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml

from editforge.dataset import export_dataset, import_to_workbook, load_samples
from editforge.dataset.layout import MANIFEST
from editforge.dataset.sample import Sample
from editforge.errors import EditForgeError
from tests.helpers import make_dataset_workbook, write_image

FORMATS = ("diffsynth", "simpletuner", "aitoolkit", "musubi", "hf")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")  # ai-toolkit toolkit/dataloader_mixins.py `img_ext_list`


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content(samples: list[Sample], extras: bool = True) -> list[tuple]:
    """What makes two samples the same: image bytes in order, instruction, and (where kept) extra fields."""
    return [(digest(s.target), tuple(digest(c) for c in s.controls), s.instruction,
             tuple(sorted(s.extra.items())) if extras else ()) for s in samples]


@pytest.fixture
def source(tmp_path):
    book = make_dataset_workbook(tmp_path / "src", n=3, controls=2)
    return load_samples(book).samples


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- round trips ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_export_then_load_gives_back_the_same_samples(source, tmp_path, fmt):
    export_dataset(source, fmt, tmp_path / "out")
    back = load_samples(tmp_path / "out")
    # Folder layouts have no place for extra fields; table formats keep them.
    assert content(back.samples, extras=fmt not in ("simpletuner", "aitoolkit")) == \
        content(source, extras=fmt not in ("simpletuner", "aitoolkit"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_then_import_to_workbook_gives_back_the_same_samples(source, tmp_path, fmt):
    export_dataset(source, fmt, tmp_path / "out")
    book, skipped = import_to_workbook(load_samples(tmp_path / "out").samples, tmp_path / "imported.xlsx")
    assert skipped == []
    again = load_samples(book)
    assert again.format == "workbook"
    assert content(again.samples, extras=False) == content(source, extras=False)


def test_import_writes_the_synth_layout_with_relative_paths(source, tmp_path):
    from editforge.sheet.workbook import open_workbook

    book, _ = import_to_workbook(source, tmp_path / "src" / "imported.csv")
    wb = open_workbook(book)
    assert {"raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "need_gen"} <= set(wb.columns)
    _, first = next(wb.rows())
    assert first["raw_image"] == "imgs/t0.png" and first["ref_image_3"] is None
    assert first["edit_prompt"] == first["gen_edit_prompt"] == "make it shade 0"
    assert first["need_gen"] == "False" and first["category"] == "cat0"
    assert not (tmp_path / "src" / "imported-images").exists()  # images inside the workbook's folder stay put
    with pytest.raises(EditForgeError, match="exists"):
        import_to_workbook(source, book)


def test_an_imported_hf_dataset_is_a_workbook_synth_accepts(source, tmp_path):
    """An HF parquet's images are unpacked into the EditForge cache, outside the workbook's folder: the
    import brings them next to the workbook, so synth (which refuses paths outside its base dir) takes the rows."""
    from editforge.sheet.synth import SynthOptions, dry_run
    from editforge.sheet.workbook import open_workbook

    export_dataset(source, "hf", tmp_path / "hf")
    data = load_samples(tmp_path / "hf")
    assert all(tmp_path not in p.parents for s in data.samples for p in s.images)  # they live in the cache
    book, _ = import_to_workbook(data.samples, tmp_path / "work" / "imported.xlsx")
    wb = open_workbook(book)
    for _, values in wb.rows():
        for key in ("raw_image", "ref_image_1", "ref_image_2"):
            assert values[key].startswith("imported-images/"), values[key]
        wb.set(_, "need_gen", True)  # ask synth for a third reference of every row
    wb.save()
    assert content(load_samples(book).samples, extras=False) == content(source, extras=False)
    plan = dry_run(book, SynthOptions())
    assert "gen_extra_ref  3" in plan and "failed         0" in plan, plan
    # hard links to the unpacked images (the test folders share one filesystem): no second copy on disk
    cached = {p.stat().st_ino for s in data.samples for p in s.images}
    placed = {p.stat().st_ino for p in (tmp_path / "work" / "imported-images").rglob("*.png")}
    assert placed == cached
    before = tree(tmp_path / "work" / "imported-images")  # and importing again (--force) changes nothing
    import_to_workbook(load_samples(tmp_path / "hf").samples, book, force=True)
    assert tree(tmp_path / "work" / "imported-images") == before


# -- trainer schemas ------------------------------------------------------------------------------

def test_diffsynth_edit_v1_is_a_csv_with_one_edit_image_path(source, tmp_path):
    # DiffSynth-Studio diffsynth/core/data/unified_dataset.py: CSV via pandas.read_csv; each of
    # --data_file_keys "image,edit_image" is os.path.join(dataset_base_path, value) and opened; a str
    # value loads one image. examples/.../lora/Qwen-Image-Edit.sh trains from metadata.csv.
    import pandas

    one = [Sample(s.key, s.target, s.controls[:1], s.instruction, s.extra) for s in source]
    export_dataset(one, "diffsynth", tmp_path / "out", model_family="qwen-image-edit")
    frame = pandas.read_csv(tmp_path / "out" / "metadata.csv")
    assert list(frame.columns[:3]) == ["image", "edit_image", "prompt"]
    for record in frame.to_dict("records"):
        assert isinstance(record["edit_image"], str)
        assert (tmp_path / "out" / record["image"]).is_file() and (tmp_path / "out" / record["edit_image"]).is_file()
    assert not (tmp_path / "out" / "metadata.json").exists()


def test_diffsynth_edit_2509_is_json_with_edit_image_lists_even_for_one(source, tmp_path):
    # unified_dataset.py routes a *list* through SequencialProcess (several images); Edit-2509's pipeline
    # wants a list even for one image (examples/qwen_image/model_inference/Qwen-Image-Edit-2509.py), and
    # a list in a CSV reaches the loader as a string, so 2509 needs metadata.json (as its example ships).
    mixed = [source[0], Sample(source[1].key, source[1].target, source[1].controls[:1], source[1].instruction)]
    export_dataset(mixed, "diffsynth", tmp_path / "out", model_family="qwen-image-edit-2509")
    records = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert [len(r["edit_image"]) for r in records] == [2, 1]
    for r in records:
        assert set(r) >= {"image", "edit_image", "prompt"} and isinstance(r["edit_image"], list)
        assert all((tmp_path / "out" / p).is_file() for p in [r["image"], *r["edit_image"]])


@pytest.mark.parametrize("family", ["qwen-image-edit", "qwen-image-edit-2509"])
def test_simpletuner_layout_matches_its_dataloader_rules(source, tmp_path, family):
    samples = source if family.endswith("2509") else [Sample(s.key, s.target, s.controls[:1], s.instruction) for s in source]
    export_dataset(samples, "simpletuner", tmp_path / "out", model_family=family)
    out = tmp_path / "out"
    backends = {b["id"]: b for b in json.loads((out / "multidatabackend.json").read_text())}
    (main,) = [b for b in backends.values() if "conditioning_data" in b]
    # documentation/DATALOADER.md: caption_strategy textfile = image.png beside image.txt, one caption a line.
    assert main["type"] == "local" and main["caption_strategy"] == "textfile"
    targets = sorted(p.name for p in Path(main["instance_data_dir"]).iterdir() if p.suffix != ".txt")
    for name in targets:
        caption = (Path(main["instance_data_dir"]) / name).with_suffix(".txt").read_text()
        assert caption.strip() and caption.count("\n") == 1
    # documentation/quickstart/QWEN_EDIT.md: every control slot is a conditioning dataset, reference_strict,
    # listed in conditioning_data, holding *exactly* the target file names (MultiAspectSampler.
    # get_conditioning_sample swaps the folder and keeps the name, extension included).
    assert len(main["conditioning_data"]) == len(samples[0].controls)
    for control_id in main["conditioning_data"]:
        control = backends[control_id]
        assert control["dataset_type"] == "conditioning" and control["conditioning_type"] == "reference_strict"
        assert control["source_dataset_id"] == main["id"]
        assert sorted(p.name for p in Path(control["instance_data_dir"]).iterdir()) == targets
    # edit-v1 caches reference embeddings in a conditioning_image_embeds dataset; edit-v2 needs none.
    embeds = [b for b in backends.values() if b.get("dataset_type") == "conditioning_image_embeds"]
    if family == "qwen-image-edit":
        assert main["conditioning_image_embeds"] == embeds[0]["id"]
    else:
        assert embeds == [] and "conditioning_image_embeds" not in main
    assert sum(b.get("default", False) for b in backends.values() if b.get("dataset_type") == "text_embeds") == 1


def test_simpletuner_renames_mixed_formats_to_one_suffix_and_keeps_pixels(tmp_path):
    from PIL import Image

    target = write_image(tmp_path / "s" / "t.jpg", 1, fmt="JPEG")
    control = write_image(tmp_path / "s" / "c.png", 2)
    export_dataset([Sample("x", target, (control,), "edit")], "simpletuner", tmp_path / "out")
    out_target, out_control = tmp_path / "out" / "target" / "000001-t.png", tmp_path / "out" / "control_1" / "000001-t.png"
    assert Image.open(out_target).tobytes() == Image.open(target).convert("RGB").tobytes()
    assert out_control.read_bytes() == control.read_bytes()  # already PNG: copied, not re-encoded


def test_simpletuner_keeps_one_control_count(source, tmp_path):
    odd = Sample("odd", source[0].target, source[0].controls[:1], "one control")
    result = export_dataset([*source, odd], "simpletuner", tmp_path / "out")
    assert [k for k, _ in result.skipped] == ["odd"] and "same number" in result.skipped[0][1]


@pytest.mark.parametrize("family,arch", [("qwen-image-edit", "qwen_image_edit"), ("qwen-image-edit-2509", "qwen_image_edit_plus")])
def test_aitoolkit_layout_and_config_match_its_examples(source, tmp_path, family, arch):
    # config/examples/train_lora_qwen_image_edit{,_2509}_32gb.yaml: folder_path + caption_ext txt +
    # control_path (one folder for Edit, a list of up to 3 for 2509); toolkit/dataloader_mixins.py finds
    # a control as control_path/<target stem><ext> for ext in img_ext_list.
    samples = source if family.endswith("2509") else [Sample(s.key, s.target, s.controls[:1], s.instruction) for s in source]
    export_dataset(samples, "aitoolkit", tmp_path / "out", model_family=family)
    config = yaml.safe_load((tmp_path / "out" / "aitoolkit_config.yaml").read_text())
    process = config["config"]["process"][0]
    assert process["model"]["arch"] == arch
    (dataset,) = process["datasets"]
    assert dataset["caption_ext"] == "txt"
    controls = dataset["control_path"] if isinstance(dataset["control_path"], list) else [dataset["control_path"]]
    assert isinstance(dataset["control_path"], list) == family.endswith("2509")
    assert len(controls) == len(samples[0].controls) <= 3
    targets = [p for p in Path(dataset["folder_path"]).iterdir() if p.suffix in IMAGE_EXTS]
    assert len(targets) == len(samples)
    for t in targets:
        assert t.with_suffix(".txt").read_text().strip()
        for folder in controls:
            assert any((Path(folder) / (t.stem + ext)).is_file() for ext in IMAGE_EXTS)


def test_musubi_jsonl_and_toml_match_its_dataset_config(source, tmp_path):
    # docs/dataset_config.md ("Image Dataset with Control Images", "Qwen-Image-Edit"): JSONL keys
    # image_path, control_path_0..N, caption; a JSONL dataset needs cache_directory; paths are opened
    # as written (src/musubi_tuner/dataset/datasources.py ImageJsonlDatasource), hence absolute.
    export_dataset(source, "musubi", tmp_path / "out")
    config = tomllib.loads((tmp_path / "out" / "dataset.toml").read_text())
    assert config["general"]["resolution"] == [1024, 1024] and config["general"]["batch_size"] == 1
    (dataset,) = config["datasets"]
    assert dataset["cache_directory"] and dataset["control_resolution"] == [1024, 1024]
    lines = Path(dataset["image_jsonl_file"]).read_text().splitlines()
    assert len(lines) == len(source)
    for line, sample in zip(lines, source):
        record = json.loads(line)
        controls = [record[f"control_path_{i}"] for i in range(len(sample.controls))]
        assert f"control_path_{len(sample.controls)}" not in record
        for path in [record["image_path"], *controls]:
            assert os.path.isabs(path) and Path(path).is_file()
        assert record["caption"] == sample.instruction


def test_hf_parquet_loads_with_datasets_as_images(source, tmp_path):
    import datasets
    from PIL import Image

    export_dataset(source, "hf", tmp_path / "out")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(ds.features["edited_image"], datasets.Image)
    assert isinstance(ds.features["source_image_2"], datasets.Image)
    assert ds["edit_prompt"] == [s.instruction for s in source]
    row = ds[0]
    assert row["edited_image"].tobytes() == Image.open(source[0].target).convert("RGB").tobytes()
    assert row["source_image"].tobytes() == Image.open(source[0].controls[0]).convert("RGB").tobytes()


# -- folder handling ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_reexport_is_idempotent_and_the_source_is_untouched(source, tmp_path, fmt):
    before = tree(tmp_path / "src")
    export_dataset(source, fmt, tmp_path / "out")
    first = tree(tmp_path / "out")
    export_dataset(source, fmt, tmp_path / "out")
    assert tree(tmp_path / "out") == first  # same files, same sizes, nothing rewritten
    assert tree(tmp_path / "src") == before


def test_reexport_removes_files_an_earlier_export_wrote(source, tmp_path):
    export_dataset(source, "aitoolkit", tmp_path / "out")
    export_dataset(source[:1], "aitoolkit", tmp_path / "out")
    targets = sorted(p.name for p in (tmp_path / "out" / "target").iterdir())
    assert targets == ["000001-t0.png", "000001-t0.txt"]  # a folder-scanning trainer sees only what was exported
    assert set(json.loads((tmp_path / "out" / MANIFEST).read_text())["files"]) == {
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()} - {MANIFEST}


def test_export_refuses_a_folder_it_did_not_write(source, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(EditForgeError, match="not empty"):
        export_dataset(source, "diffsynth", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_link_hard_links_and_names_are_collision_free(tmp_path):
    a = write_image(tmp_path / "s" / "a" / "same.png", 1)
    b = write_image(tmp_path / "s" / "b" / "same.png", 2)
    c = write_image(tmp_path / "s" / "c.png", 3)
    samples = [Sample("1", a, (c,), "one"), Sample("2", b, (c,), "two")]
    export_dataset(samples, "musubi", tmp_path / "out", link=True)
    out_targets = sorted((tmp_path / "out" / "target").iterdir())
    assert [p.name for p in out_targets] == ["000001-same.png", "000002-same.png"]
    assert os.path.samefile(out_targets[0], a) and os.path.samefile(out_targets[1], b)
    with pytest.raises(EditForgeError, match="`link` does not apply"):
        export_dataset(samples, "hf", tmp_path / "hf", link=True)


def test_unusable_samples_are_left_out_with_reasons(source, tmp_path):
    good = source[0]
    bad = [
        Sample("hostile", good.target, good.controls, "x", problems=("hostile path '../x' leaves the dataset folder /d",)),
        Sample("missing", tmp_path / "gone.png", good.controls, "x"),
        Sample("empty", good.target, good.controls, "  "),
        Sample("nocontrol", good.target, (), "x"),
        Sample("toomany", good.target, good.controls * 2, "x"),
    ]
    result = export_dataset([good, *bad], "diffsynth", tmp_path / "out")
    reasons = dict(result.skipped)
    assert [s.key for s in result.exported] == [good.key]
    assert "hostile" in reasons["hostile"] and "not found" in reasons["missing"]
    assert reasons["empty"] == "empty instruction" and reasons["nocontrol"] == "no control image"
    assert "at most 3" in reasons["toomany"]
    with pytest.raises(EditForgeError, match="no sample can be exported"):
        export_dataset(bad, "diffsynth", tmp_path / "out2")
    with pytest.raises(EditForgeError, match="unknown export format"):
        export_dataset([good], "kohya", tmp_path / "out3")
    with pytest.raises(EditForgeError, match="unknown model family"):
        export_dataset([good], "diffsynth", tmp_path / "out3", model_family="qwen-image")


def test_only_accepted_rows_export(tmp_path):
    book = make_dataset_workbook(tmp_path / "src", n=3)
    from editforge.sheet.workbook import open_workbook

    wb = open_workbook(book)
    wb.set(2, "review", "ok")
    wb.set(3, "review", "rejected")
    wb.save()
    data = load_samples(book, only_accepted=True)
    result = export_dataset(data.samples, "diffsynth", tmp_path / "out")
    assert [s.key for s in result.exported] == ["row 2"]
