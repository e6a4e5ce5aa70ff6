"""`synth --judge`: each new pair scored with the pipeline's own text encoder (the same module: no second
model), written as `editforge judge` writes it (a later judge run finds it judged); `--judge-min` makes a
low-scoring picture again with the next seed, within `--retries`."""

from __future__ import annotations

import pytest

from editforge.judge import Pair, score_pairs
from editforge.judge.workbook import judge_workbook
from editforge.images import open_rgb
from editforge.inference.options import GenerationOptions
from editforge.models.options import LoadOptions
from editforge.sheet.synth import SynthOptions
from editforge.sheet.launch import synth_with_model
from editforge.sheet.workbook import open_workbook
from tests.helpers import make_workbook

TINY = "tiny-qwen-image-edit-2509"
# raw_image, ref_image_1..3, gen_edit_prompt, instruction, need_gen
ROWS = [
    [None, "img/r1.png", "img/r2.png", None, "make the sample", None, True],   # 2 gen_raw
    ["img/r0.png", None, None, None, "make a reference", "undo it", True],     # 3 gen_ref
    ["img/r0.png", "img/r1.png", None, None, "one more ref", None, True],      # 4 gen_extra_ref
]


class Recorder:
    """The real tiny-model generator factory, remembering the generators it made and the seeds they ran."""

    def __init__(self):
        from editforge.inference.generator import model_generator

        # 2 steps: the pictures are noise whatever the steps, and the judge's path is the same
        self.make, _ = model_generator(TINY, LoadOptions(device="cpu"), GenerationOptions(steps=2))
        self.made, self.seeds = [], []

    def __call__(self):
        generator = self.make()
        self.made.append(generator)
        original = generator.__call__

        class Seeds(type(generator)):
            def __call__(inner, images, prompt, seed):
                self.seeds.append(seed)
                return original(images, prompt, seed)

        generator.__class__ = Seeds
        return generator


def count_qwen_vl_builds(monkeypatch) -> list:
    from transformers import Qwen2_5_VLForConditionalGeneration

    built = []
    original = Qwen2_5_VLForConditionalGeneration.__init__

    def counting(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "__init__", counting)
    return built


def test_synth_judges_with_the_loaded_text_encoder_and_judge_finds_it_done(tmp_path, monkeypatch):
    from editforge.models.tiny import tiny_model_dir

    path = make_workbook(tmp_path, ROWS)
    tiny_model_dir(TINY)  # built (once per test session) before counting
    built = count_qwen_vl_builds(monkeypatch)
    recorder = Recorder()
    summary = synth_with_model(path, TINY, SynthOptions(seed=3, judge=True), make_generator=recorder)
    assert summary.generated == 3
    (generator,) = recorder.made
    assert generator.judge().model is generator.pipe.text_encoder  # the same module object ...
    assert len(built) == 1  # ... and the pipeline's is the only Qwen2.5-VL ever built

    book = open_workbook(path)
    scores = {row: book.get(row, "judge_score") for row in (2, 3, 4)}
    assert all(isinstance(s, float) and 0 <= s <= 1 for s in scores.values())
    # row 3 (gen_ref): the pair is the new reference -> the sample, with the training instruction
    base = path.parent
    pair = Pair((open_rgb(base / book.get(3, "ref_image_1")),), open_rgb(base / "img/r0.png"), "undo it")
    assert scores[3] == round(score_pairs(generator.judge(), [pair])[0], 4)
    # the same pairs and fingerprints as `editforge judge` reads from the sheet: nothing left to judge
    again = judge_workbook(path, TINY, lambda: pytest.fail("judged again"))
    assert (again.judged, again.already) == (0, 3)


def test_judge_min_makes_the_picture_again_with_the_next_seed(tmp_path):
    path = make_workbook(tmp_path, ROWS[:1])
    recorder = Recorder()
    summary = synth_with_model(path, TINY, SynthOptions(seed=3, judge=True, judge_min=0.999, retries=2),
                               make_generator=recorder)
    first = recorder.seeds[0]
    assert recorder.seeds == [first, first + 1, first + 2]
    assert summary.failed == 1
    status = open_workbook(path).get(2, "gen_status")
    assert status.startswith("failed: quality gate: judge score 0.") and "below 0.999 (3 tries)" in status
    assert open_workbook(path).get(2, "judge_score") is None

    path = make_workbook(tmp_path / "low", ROWS[:1])
    recorder = Recorder()
    summary = synth_with_model(path, TINY, SynthOptions(seed=3, judge=True, judge_min=0.01, retries=2),
                               make_generator=recorder)
    assert summary.generated == 1 and len(recorder.seeds) == 1
    assert isinstance(open_workbook(path).get(2, "judge_score"), float)


def test_synth_judge_without_a_judge_says_so(tmp_path):
    from editforge.errors import EditForgeError
    from editforge.sheet.fake import fake_generator

    path = make_workbook(tmp_path, ROWS[:1])
    with pytest.raises(EditForgeError, match="needs a generator with a judge"):
        synth_with_model(path, TINY, SynthOptions(judge=True), make_generator=fake_generator)
