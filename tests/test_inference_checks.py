"""Input the model cannot take is refused before any model work, per row, with the limit in the message."""

from __future__ import annotations

import pytest

from editforge.errors import EditForgeError
from editforge.inference.generate import check_request
from editforge.inference.generator import PipelineGenerator
from editforge.inference.options import GenerationOptions
from editforge.sheet.workbook import open_workbook
from tests.helpers import noise_image
from tests.helpers import make_workbook, run_synth

AREAS = {"max_pixels": 64 * 64, "condition_pixels": 56 * 56}


def test_a_prompt_longer_than_the_tokenizer_reads_is_refused(tiny_edit_plus):
    limit = tiny_edit_plus.tokenizer_max_length
    assert limit == 1024  # the Edit pipelines' own figure (diffusers 0.42.1)
    words = " ".join(f"w{i}" for i in range(5000))
    tokens = len(tiny_edit_plus.tokenizer(words)["input_ids"])
    with pytest.raises(EditForgeError, match=f"the prompt is {tokens} tokens; qwen-image-edit-2509 reads at most 1024"):
        check_request(tiny_edit_plus, [(64, 64)], words)
    fits = " ".join(words.split()[:200])
    assert len(tiny_edit_plus.tokenizer(fits)["input_ids"]) <= limit
    check_request(tiny_edit_plus, [(64, 64)], fits)


@pytest.mark.parametrize("size, area", [((4, 4000), "output"), ((4000, 4), "output"), ((624, 48), "condition")])
def test_an_aspect_ratio_the_resizing_would_squash_to_nothing_is_refused(tiny_edit_plus, size, area):
    with pytest.raises(EditForgeError, match=f"at the {area} area of .* pixels the model takes aspect ratios up to "
                                             r"about \d+:1 \(crop it\)"):
        check_request(tiny_edit_plus, [size], "p", GenerationOptions(**AREAS))
    check_request(tiny_edit_plus, [(128, 64)], "p", GenerationOptions(**AREAS))  # 2:1 is fine


def test_synth_with_the_tiny_model_fails_those_rows_alone_before_any_model_work(tiny_edit_plus, tmp_path):
    path = make_workbook(tmp_path, rows=[])
    noise_image(4, 4000).save(tmp_path / "img" / "thin.png")
    long = " ".join(f"w{i}" for i in range(5000))
    rows = [[f"img/r{i}.png", None, None, None, f"{long} {i}", "t", True] for i in range(3)]
    rows += [["img/thin.png", None, None, None, "make a reference", "t", True]]
    rows += [[f"img/r{i}.png", None, None, None, f"make reference {i}", "t", True] for i in range(2)]
    path = make_workbook(tmp_path, rows=rows)

    class Counting(PipelineGenerator):
        made: list = []

        def __call__(self, images, prompt, seed):
            self.made.append(prompt)
            return super().__call__(images, prompt, seed)

    generator = Counting(tiny_edit_plus, GenerationOptions(steps=2, **AREAS))
    summary = run_synth(path, generator, seed=1)
    assert (summary.generated, summary.failed) == (2, 4) and generator.made == ["make reference 0", "make reference 1"]
    statuses = [v["gen_status"] for _, v in open_workbook(path).rows()]
    assert all(s.startswith("failed: the prompt is ") and s.endswith("reads at most 1024 (shorten it)")
               for s in statuses[:3])
    assert statuses[3].startswith("failed: qwen-image-edit-2509: a 4x4000 picture (aspect 1000:1) does not fit")
    assert statuses[4:] == ["done", "done"]
