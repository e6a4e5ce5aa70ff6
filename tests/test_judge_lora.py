"""Judging a LoRA on held-out pairs: each input edited with and without it (same seed), both outputs scored;
the means with 95% intervals, the paired difference, per instruction type."""

from __future__ import annotations

import math

import numpy as np
import pytest

from editforge.errors import EditForgeError
from editforge.images import open_rgb
from editforge.inference.generate import edit
from editforge.inference.options import GenerationOptions
from editforge.judge import Pair, judge_from_pipeline, score_pairs
from editforge.judge.lora import judge_lora
from tests.helpers import make_dataset_workbook, write_lora

TINY = "tiny-qwen-image-edit-2509"


def test_with_and_without_the_lora_scored_with_intervals_per_group(tmp_path, tiny_edit_plus):
    from editforge.sheet.workbook import open_workbook

    held_out = make_dataset_workbook(tmp_path, n=4, controls=1)
    book = open_workbook(held_out)
    for row, kind in zip(range(2, 6), ["recolor", "add", "recolor", "add"]):
        book.set(row, "category", kind)
    book.save()
    lora = tmp_path / "lora.safetensors"
    write_lora(lora, "diffusers")
    report = judge_lora(TINY, str(lora), held_out, seed=5, group_column="category", generation=GenerationOptions(steps=2))

    # "without" is the plain model: the same edits and scores as a pipeline that never saw the LoRA
    judge = judge_from_pipeline(tiny_edit_plus)
    samples = [(open_rgb(tmp_path / f"imgs/r{i}_0.png"), f"make it shade {i}") for i in range(4)]
    plain = [edit(tiny_edit_plus, [image], text, seed=5 + i, steps=2) for i, (image, text) in enumerate(samples)]
    expected = score_pairs(judge, [Pair((image,), out, text) for (image, text), out in zip(samples, plain)])
    assert report.base_scores == pytest.approx(expected, abs=1e-5)
    assert report.lora_scores != pytest.approx(report.base_scores, abs=1e-7)  # the LoRA changed the pictures

    base = np.array(report.base_scores)
    half = 1.96 * base.std(ddof=1) / math.sqrt(4)
    assert (report.overall.base.mean, report.overall.base.low, report.overall.base.high) == pytest.approx(
        (base.mean(), base.mean() - half, base.mean() + half))
    diff = np.array(report.lora_scores) - base
    assert report.overall.difference.mean == pytest.approx(diff.mean())
    assert set(report.groups) == {"recolor", "add"}
    assert report.groups["recolor"].lora.mean == pytest.approx((report.lora_scores[0] + report.lora_scores[2]) / 2)
    assert report.lines()[0].startswith("all: n 4, without LoRA 0.")


def test_a_group_column_no_sample_has_is_one_line(tmp_path):
    held_out = make_dataset_workbook(tmp_path, n=2, controls=1)
    lora = tmp_path / "lora.safetensors"
    write_lora(lora, "diffusers")
    with pytest.raises(EditForgeError, match="`group_column` kind: no sample"):
        judge_lora(TINY, str(lora), held_out, group_column="kind")


def test_the_command_line_takes_lora_with_pairs_and_no_workbook(cli, tmp_path):
    code, _, err = cli("judge", "--lora", "x.safetensors")
    assert code == 2 and "takes --lora and --pairs" in err
    code, _, err = cli("judge")
    assert code == 2 and "give a WORKBOOK to judge, or --lora with --pairs" in err
