"""The judge's mechanics on the tiny Edit-2509 text encoder (random weights: the answers mean nothing, the
mechanics do): P(yes) from the next-token logits, deterministic, batched = one by one, the exact prompt
text and image order the processor sees, the lm_head check, a separate --judge-model."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from editforge.errors import EditForgeError
from editforge.judge import Pair, check_head, draft_instructions, explain_pairs, judge_from_pipeline, load_judge, score_pairs
from editforge.judge.ask import answer_tokens
from editforge.judge.model import Judge, judge_size
from tests.helpers import noise_image, sharp_judge

TINY = "tiny-qwen-image-edit-2509"


@pytest.fixture(scope="module")
def judge(tiny_edit_plus):
    return judge_from_pipeline(tiny_edit_plus)


@pytest.fixture(scope="module")
def sharp(judge):
    return sharp_judge(judge)


def pairs():
    """Mixed input counts, sizes and aspects, instructions of different lengths: batches need padding."""
    return [
        Pair((noise_image(64, 64, 1),), noise_image(64, 64, 2), "make the sky red"),
        Pair((noise_image(96, 64, 3), noise_image(64, 64, 4)), noise_image(64, 80, 5),
             "add a cat on the left and remove the text from the sign in the background"),
        Pair((noise_image(64, 64, 6), noise_image(48, 64, 7), noise_image(64, 64, 8)), noise_image(64, 64, 9), "x"),
        Pair((noise_image(64, 64, 10),), noise_image(128, 64, 11), "turn it into a watercolor painting"),
    ]


def test_scores_are_probabilities_spread_and_deterministic(sharp):
    first = score_pairs(sharp, pairs(), batch_size=4)
    assert all(0.0 <= s <= 1.0 for s in first)
    assert max(first) - min(first) > 0.01, first  # 1000x the tolerance below: a wrong batch row shows
    assert score_pairs(sharp, pairs(), batch_size=4) == first


def test_batched_equals_one_by_one(sharp):
    one_by_one = [score_pairs(sharp, [p])[0] for p in pairs()]
    for batch_size in (2, 4):
        assert score_pairs(sharp, pairs(), batch_size=batch_size) == pytest.approx(one_by_one, abs=1e-5)
    assert explain_pairs(sharp, pairs(), batch_size=4) == [explain_pairs(sharp, [p])[0] for p in pairs()]


def test_score_is_p_yes_against_p_no_over_the_answer_tokens(judge):
    """A head that gives every yes-token logit 2 and every other token 0: P(yes) = e²/(e²+1) over the yes/no
    tokens, whatever the image; a softmax over the whole vocabulary, or one token per word, gives another number."""
    yes, no = answer_tokens(judge.processor.tokenizer)
    assert len(yes) == len(no) == 2  # "Yes"/"yes" and "No"/"no" start differently in the tiny vocabulary
    model = copy.deepcopy(judge.model)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[yes] = 2.0
    model.lm_head = head
    scores = score_pairs(Judge(model, judge.processor, "fixed", judge.pixels), pairs()[:2], batch_size=2)
    expected = torch.tensor(2.0).exp().item() / (torch.tensor(2.0).exp().item() + 1)
    assert scores == pytest.approx([expected, expected], abs=1e-6)


class Recording:
    """The processor, recording what it is given."""

    def __init__(self, processor):
        self.processor, self.calls = processor, []

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.processor(**kwargs)


def solid(color, size=(64, 64)):
    return Image.new("RGB", size, color)


def test_the_model_sees_the_documented_prompt_with_inputs_then_output(judge):
    recording = Recording(judge.processor)
    spy = Judge(judge.model, recording, "spy", judge.pixels)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    pair = Pair((solid(colors[0], (96, 64)), solid(colors[1])), solid(colors[2], (64, 128)), "make the sky red")
    score_pairs(spy, [pair])
    (call,) = recording.calls
    assert call["text"] == [
        "<|im_start|>system\nYou are a careful judge of image edits.<|im_end|>\n"
        "<|im_start|>user\n"
        "Input image 1: <|vision_start|><|image_pad|><|vision_end|>\n"
        "Input image 2: <|vision_start|><|image_pad|><|vision_end|>\n"
        "Output image: <|vision_start|><|image_pad|><|vision_end|>\n"
        "Instruction: make the sky red\n"
        "Does the output image follow the instruction, while keeping everything the instruction does not ask "
        "to change as it is in the input image(s)? Answer yes or no.<|im_end|>\n"
        "<|im_start|>assistant\n"
    ]
    seen = call["images"]
    assert [img.getpixel((0, 0)) for img in seen] == colors  # inputs in slot order, then the output
    assert [img.size for img in seen] == [judge_size(s, judge.pixels) for s in ((96, 64), (64, 64), (64, 128))]
    assert all(w % 28 == 0 and h % 28 == 0 for w, h in (img.size for img in seen))
    assert call["padding_side"] == "left"

    explain_pairs(spy, [pair])
    assert "In one short sentence: does the output image follow the instruction" in recording.calls[-1]["text"][0]
    draft_instructions(spy, [pair])
    text = recording.calls[-1]["text"][0]
    assert "Write the editing instruction that turns the input image(s) into the output image" in text
    assert "make the sky red" not in text  # a draft is made from the pictures alone


def test_judge_size_keeps_the_aspect_at_the_area():
    assert judge_size((1024, 1024), 384 * 384) == (392, 392)
    assert judge_size((2000, 1000), 384 * 384) == (532, 280)
    assert judge_size((64, 64), 56 * 56) == (56, 56)


def test_the_pipelines_own_text_encoder_is_the_judge(tiny_edit_plus, judge):
    assert judge.model is tiny_edit_plus.text_encoder
    assert judge.processor is tiny_edit_plus.processor


@pytest.fixture
def headless(tmp_path, tiny_edit_plus):
    """The tiny text encoder saved without its lm_head weights."""
    from editforge.models.tiny import tiny_model_dir

    source = tiny_model_dir(TINY) / "text_encoder"
    folder = tmp_path / "headless"
    folder.mkdir()
    for item in source.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    weights = load_file(str(folder / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_a_checkpoint_without_its_head_is_refused_in_one_line(headless):
    from transformers import Qwen2_5_VLForConditionalGeneration

    # the premise: transformers loads it anyway, reporting the head missing (and initialising it at random)
    _, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(headless, output_loading_info=True)
    assert "lm_head.weight" in info["missing_keys"]
    with pytest.raises(EditForgeError) as exc:
        check_head(headless)
    assert "lm_head.weight" in str(exc.value) and "--judge-model" in str(exc.value)
    assert "\n" not in str(exc.value)
    with pytest.raises(EditForgeError, match="lm_head"):
        load_judge(judge_model=str(headless), device="cpu")


def test_a_head_tied_to_the_embeddings_counts(headless):
    import json

    config = json.loads((headless / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (headless / "config.json").write_text(json.dumps(config))
    check_head(headless)


def test_judge_loaded_alone_or_as_a_separate_model_scores_like_the_pipeline(tmp_path, tiny_edit_plus, judge):
    expected = score_pairs(judge, pairs())
    alone = load_judge(TINY, device="cpu")
    assert alone.model is not tiny_edit_plus.text_encoder
    assert score_pairs(alone, pairs()) == pytest.approx(expected, abs=1e-6)
    # a standalone Qwen2.5-VL folder (weights and processor side by side), as --judge-model takes
    folder = tmp_path / "qwen2.5-vl"
    tiny_edit_plus.text_encoder.save_pretrained(folder)
    tiny_edit_plus.processor.save_pretrained(folder)
    other = load_judge(judge_model=str(folder), device="cpu", pixels=judge.pixels)
    assert other.name == str(folder)
    assert score_pairs(other, pairs()) == pytest.approx(expected, abs=1e-6)


def test_judge_model_that_is_neither_folder_nor_hub_id():
    with pytest.raises(EditForgeError, match="not a folder, nor a hub id"):
        load_judge(judge_model="no/such/thing", device="cpu")


def test_generated_text_is_one_line_a_workbook_cell_takes():
    from editforge.judge.ask import cell_safe

    assert cell_safe("\x01ginal\ufffd\ufffdser\nV  Gen\tx\x0b") == "ginalser V Gen x"
