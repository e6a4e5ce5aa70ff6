"""`editforge dataset check | export | import` as a user runs them: exit codes, output, errors."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from editforge.cli import app, main
from tests.helpers import run_cli
from tests.helpers import make_dataset_workbook

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["dataset", *map(str, args)])


def test_check_clean_exits_0_and_reports_counts(tmp_path):
    book = make_dataset_workbook(tmp_path, n=2, size=(300, 300))
    result = invoke("check", book)
    assert result.exit_code == 0, result.output
    assert "2 samples, 6 images" in result.output and "0 errors, 0 warnings" in result.output


def test_check_json_and_exit_1_on_errors(tmp_path):
    book = make_dataset_workbook(tmp_path, n=3)  # 64 px images: tiny warnings
    (tmp_path / "imgs" / "r1_0.png").write_bytes(b"broken")
    (tmp_path / "imgs" / "t2.png").unlink()
    result = invoke("check", book, "--json", "--workers", "1")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["format"] == "workbook" and report["samples"] == 3
    assert report["counts"]["unreadable"] == 1 and report["counts"]["missing"] == 1 and report["counts"]["tiny"] > 0
    assert {i["sample"] for i in report["issues"] if i["severity"] == "error"} == {"row 3", "row 4"}


def test_check_warnings_only_exit_0(tmp_path):
    book = make_dataset_workbook(tmp_path, n=1)
    result = invoke("check", book)
    assert result.exit_code == 0 and "tiny" in result.output and "warnings only" in result.output


def test_export_and_import_commands(tmp_path):
    book = make_dataset_workbook(tmp_path / "src", n=2)
    result = invoke("export", book, "--format", "musubi", "--out", tmp_path / "out", "--model-family", "qwen-image-edit-2509")
    assert result.exit_code == 0, result.output
    assert "exported 2 samples" in result.output and (tmp_path / "out" / "dataset.toml").is_file()
    result = invoke("import", tmp_path / "out", "--out", tmp_path / "back.xlsx")
    assert result.exit_code == 0, result.output
    assert "wrote 2 samples" in result.output and (tmp_path / "back.xlsx").is_file()


@pytest.mark.parametrize("args,message", [
    (["check", "{tmp}/nope.xlsx"], "dataset not found"),
    (["export", "{book}", "--format", "kohya", "--out", "{tmp}/o"], "Invalid value for '--format' / '-f': 'kohya' is not one of 'diffsynth', "),
    (["export", "{book}", "--format", "diffsynth", "--out", "{tmp}/o", "--model-family", "qwen-image"],
     "Invalid value for '--model-family': 'qwen-image' is not one of 'qwen-image-edit', "),
    (["check", "{book}", "--near-distance", "99"], "--near-distance"),
    (["import", "{book}", "--out", "{book}"], "exists; choose a new name"),
    (["check", "{tmp}/ds", "--only-accepted"], "apply to a workbook"),
    # a wrong column reads nothing: it is named with the columns there are, not reported as `0 samples ... clean`
    (["check", "{tmp}/ds/metadata.csv", "--target-column", "img"],
     "metadata.csv has no column 'img'; its columns: image, edit_image, prompt"),
    (["check", "{tmp}/ds", "--instruction-column", "caption"], "metadata.csv has no column 'caption'"),
    (["check", "{tmp}/ds", "--control-columns", "edit_image,ref"], "metadata.csv has no column 'ref'"),
    (["check", "{tmp}/ds/records.jsonl", "--instruction-column", "prompt"],
     "records.jsonl has no column 'prompt'; its columns: image_path, control_path_0, caption"),
    (["check", "{tmp}/empty/metadata.csv"], "has no samples to check"),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    # In-process through `main`, the same entry point `editforge` runs (the subprocess test below
    # covers the real process once; a process per case would cost seconds of imports each).
    book = make_dataset_workbook(tmp_path, n=1)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "metadata.csv").write_text("image,edit_image,prompt\nimgs/t0.png,imgs/r0_0.png,x\n")
    (tmp_path / "ds" / "records.jsonl").write_text(
        json.dumps({"image_path": "t0.png", "control_path_0": "r0.png", "caption": "x"}) + "\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metadata.csv").write_text("image,edit_image,prompt\n")
    monkeypatch.setattr(sys, "argv", ["editforge", "dataset", *[a.format(tmp=tmp_path, book=book) for a in args]])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert err.startswith("error:") and len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_as_a_process_errors_and_usage_errors_exit_2_without_traceback(tmp_path):
    proc = run_cli("dataset", "check", tmp_path / "nope.xlsx")
    assert proc.returncode == 2 and proc.stderr.startswith("error: dataset not found") and "Traceback" not in proc.stderr
    proc = run_cli("dataset", "export", tmp_path)
    assert proc.returncode == 2 and "--format" in proc.stderr and "Traceback" not in proc.stderr


def test_summaries_keep_long_paths_whole_on_a_narrow_terminal(tmp_path):
    """rich wraps at the console width, breaking a path mid-word; the summary lines are soft-wrapped instead."""
    import os
    import subprocess

    book = make_dataset_workbook(tmp_path / "src", n=2)
    out = tmp_path / "a-rather-long-folder-name-for-the-exported-training-set" / "diffsynth-export"
    result = subprocess.run([sys.executable, "-m", "editforge", "dataset", "export", str(book), "--format",
                             "diffsynth", "--out", str(out)], env={**os.environ, "COLUMNS": "40"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"exported 2 samples to {out} (diffsynth, qwen-image-edit-2509)" in result.stdout
