"""A full-size model that cannot fit the GPU is refused before loading, in one line naming what would fit;
the sizes come from the full-size plan (`editforge bench plan`), the GPU is stood in on the CPU."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch

from editforge.benchmark.architectures import FULL_TRANSFORMER
from editforge.errors import EditForgeError
from editforge.models import memory
from editforge.models.loading import prepare_load
from editforge.models.registry import FAMILIES

GiB = 2**30
CARD_24 = 24564 * 2**20  # what an RTX 4090's driver reports
CARD_80 = 81559 * 2**20  # an H100 80GB's


@pytest.fixture
def full_size_folder(tmp_path):
    """An Edit-2509 pipeline folder of the published shape, without weights: what `prepare_load` reads."""
    folder = tmp_path / "Qwen-Image-Edit-2509"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "QwenImageEditPlusPipeline"}))
    (folder / "transformer" / "config.json").write_text(json.dumps({**FULL_TRANSFORMER, "zero_cond_t": False}))
    return folder


@pytest.fixture
def gpu_of(monkeypatch):
    """Make torch report one CUDA GPU with `total` bytes."""
    def gpu(total: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=total))
    return gpu


def test_the_measured_table_covers_every_family_and_synths_model_in_every_configuration():
    table = memory.measured()
    assert table["measured_for"] == {k: FULL_TRANSFORMER[k] for k in table["measured_for"]}
    for name, family in FAMILIES.items():
        needs = memory.needs(family, FULL_TRANSFORMER)
        assert {"bf16/none", "bf16/model", "bf16/sequential"} <= set(needs), name
        assert needs["bf16/sequential"] < needs["bf16/model"] < needs["bf16/none"], name  # offloading saves
    needs = memory.needs(FAMILIES["qwen-image-edit-2509"], FULL_TRANSFORMER)
    assert set(needs) == set(memory.PREFERENCE)
    assert needs["fp8/none"] < needs["bf16/none"] and needs["int8/model"] < needs["bf16/model"]


def test_synth_defaults_on_a_24gb_card_are_refused_with_what_fits(full_size_folder, gpu_of):
    gpu_of(CARD_24)
    with pytest.raises(EditForgeError) as refused:
        prepare_load(str(full_size_folder), device="cuda", lightning=None)
    message = str(refused.value)
    assert "\n" not in message and "qwen-image-edit-2509 with a bf16 transformer and no offload needs about" in message
    assert "this GPU has 24.0 GiB. What fits: " in message
    table = memory.needs(FAMILIES["qwen-image-edit-2509"], FULL_TRANSFORMER)
    first = next(k for k in memory.PREFERENCE if table[k] <= CARD_24)
    dtype, offload = first.split("/")
    assert f"`quantize={dtype}` with `offload={offload}` ({table[first] / GiB:.1f} GiB)" in message
    # ... and what it offers does load
    plan = prepare_load(str(full_size_folder), device="cuda", quantize=dtype, offload=offload)
    assert plan.options.offload == offload


def test_an_80gb_card_takes_the_defaults_and_the_check_can_be_skipped(full_size_folder, gpu_of):
    gpu_of(CARD_80)
    assert prepare_load(str(full_size_folder), device="cuda").device == "cuda"
    gpu_of(CARD_24)
    assert prepare_load(str(full_size_folder), device="cuda", skip_memory_check=True).device == "cuda"


def test_other_shapes_and_fp32_are_not_checked(full_size_folder, gpu_of):
    gpu_of(1 * GiB)
    prepare_load("tiny-qwen-image-edit-2509", device="cuda")  # the tiny model: not the measured shape
    prepare_load(str(full_size_folder), device="cuda", dtype="fp32")


def test_the_refusal_names_flags_on_the_command_line(full_size_folder, gpu_of, cli, make_image):
    gpu_of(CARD_24)
    code, out, err = cli("edit", "--image", str(make_image()), "--prompt", "make it red", "--model", str(full_size_folder),
                         "--device", "cuda", "--out", "out.png")
    assert code == 2 and "Traceback" not in err
    assert "What fits: --quantize fp8 with --offload model" in err and "--skip-memory-check loads anyway" in err


def test_the_offer_prefers_speed_and_says_when_nothing_fits(monkeypatch):
    table = {"bf16/none": 60 * GiB, "fp8/none": 30 * GiB, "int8/none": 27 * GiB, "bf16/model": 40 * GiB,
             "fp8/model": 22 * GiB, "int8/model": 21 * GiB, "bf16/sequential": 5 * GiB,
             "fp8/sequential": 4 * GiB, "int8/sequential": 4 * GiB}
    monkeypatch.setattr(memory, "needs", lambda *args: table)
    family = FAMILIES["qwen-image-edit-2509"]
    with pytest.raises(EditForgeError, match=r"What fits: `quantize=fp8` with `offload=model` \(22.0 GiB\), "
                                             r"`quantize=int8` with `offload=model` \(21.0 GiB\), `offload=sequential`"):
        memory.check_fits(family, {}, None, None, 24 * GiB)
    memory.check_fits(family, {}, "fp8", "model", 24 * GiB)  # fits: no error
    with pytest.raises(EditForgeError, match="Nothing measured fits this card"):
        memory.check_fits(family, {}, None, None, 3 * GiB)


def test_training_prints_its_measured_need_and_what_fits_before_loading(full_size_folder, gpu_of):
    from editforge.train.loop import memory_line

    table = memory.measured()["training"]
    config = SimpleNamespace(
        train=SimpleNamespace(quantize=None, gradient_checkpointing=True, blocks_to_swap=0),
        data=SimpleNamespace(max_pixels=None, batch_size=1), lora=SimpleNamespace(rank=16))
    samples = [SimpleNamespace(controls=("a.png",))]
    gpu_of(CARD_80)
    plan = prepare_load(str(full_size_folder), device="cuda")
    line = memory_line(config, plan, samples, "cuda")
    assert line == (f"memory: about {table['bf16/1024/1/1'] / GiB:.1f} GiB on the GPU (measured by `editforge bench "
                    f"plan`: bf16 base, 1024², 1 control(s), batch 1); this GPU has {CARD_80 / GiB:.1f} GiB")
    card_48 = 49140 * 2**20
    gpu_of(card_48)
    line = memory_line(config, plan, samples, "cuda")
    assert "would run out. What fits: `train.quantize: fp8`" in line and "`train.quantize: int8`" in line
    gpu_of(CARD_24)
    line = memory_line(config, plan, samples, "cuda")
    # no base fits 24 GB unswapped: the fewest swapped blocks that fit, the bf16 base first, then fp8 and int8
    swapped = memory.measured()["training_swapped"]
    offers = re.findall(r"`train.blocks_to_swap: (\d+)` \(([\d.]+) GiB, ([\d.]+) GiB of pinned", line)
    assert "would run out. What fits: `train.blocks_to_swap: " in line and len(offers) == 3, line
    for dtype, (blocks, need, pinned) in zip(("bf16", "fp8", "int8"), offers):
        at, per_block = swapped[f"{dtype}/1024/1/1"]["needs"]
        fewest = next(n for n in range(3, 60) if at + per_block * (n - 3) <= CARD_24)
        assert int(blocks) == fewest and float(need) == round((at + per_block * (fewest - 3)) / GiB, 1)
        pin_at, pin_per_block = swapped[f"{dtype}/1024/1/1"]["pinned"]
        assert float(pinned) == round((pin_at + pin_per_block * (fewest - 3)) / GiB, 1)
    # a run that swaps: the need of its swapped row, and it fits
    config.train.blocks_to_swap = int(offers[0][0])
    assert memory_line(config, plan, samples, "cuda") == (
        f"memory: about {offers[0][1]} GiB on the GPU (measured by `editforge bench plan`: bf16 base, 1024², 1 "
        f"control(s), batch 1, {offers[0][0]} blocks swapped); this GPU has {CARD_24 / GiB:.1f} GiB")
    config.train.blocks_to_swap = 0
    # a bigger batch, 2 controls and 512² each pick their own measured row
    config.data = SimpleNamespace(max_pixels=512 * 512, batch_size=2)
    line = memory_line(config, plan, [SimpleNamespace(controls=("a", "b"))], "cuda")
    assert f"about {table['bf16/512/2/2'] / GiB:.1f} GiB" in line and "512², 2 control(s), batch 2" in line
    # what no row covers says so; a CPU run prints nothing
    config.train.blocks_to_swap = 2  # swapped rows are measured from 3 blocks up
    assert memory_line(config, plan, samples, "cuda").startswith("memory: no measured row covers this run")
    assert memory_line(config, plan, samples, "cpu") is None


def test_the_table_loading_checks_is_the_committed_plans():
    """`memory_needs.json` is `memory_table` of the plan in docs/plan.json: the numbers checked before loading are the
    ones docs/benchmarks.md shows."""
    from pathlib import Path

    from editforge.plan.fit import memory_table

    plan = json.loads((Path(__file__).parents[1] / "docs" / "plan.json").read_text())
    assert memory_table(plan) == memory.measured()
