"""The fast path changes speed, not results."""

import numpy as np

import editforge
from editforge.models.speed import best_attention_backend
from tests.conftest import noise_image


def _count_encoder_calls(pipe):
    calls = []
    pipe.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_repeated_prompt_and_images_reuse_the_text_embedding():
    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu")
    slow = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", reuse_embeddings=False)
    calls = _count_encoder_calls(pipe)
    images = [noise_image(seed=1), noise_image(seed=2)]
    first = np.asarray(editforge.edit(pipe, images, "make it red", seed=0, steps=2))
    assert len(calls) == 2  # cfg 4: the prompt and the " " negative prompt
    again = np.asarray(editforge.edit(pipe, images, "make it red", seed=1, steps=2))  # a retry with a new seed
    assert len(calls) == 2, "the second call must reuse both cached embeddings"
    assert np.array_equal(again, np.asarray(editforge.edit(slow, images, "make it red", seed=1, steps=2)))
    assert not np.array_equal(first, again)
    editforge.edit(pipe, [noise_image(seed=1), noise_image(seed=3)], "make it red", seed=0, steps=2)
    editforge.edit(pipe, images, "make it blue", seed=0, steps=2)
    assert len(calls) == 5, "another image (prompt + negative) or another prompt is encoded afresh"


def test_attention_backend_choice_and_record():
    assert best_attention_backend("cpu") == "native"
    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu")
    assert pipe.editforge_info["fast_path"] == {"attention": "native", "embedding_cache": 32}
