"""--offload model, forced on the CPU (accelerate's hooks move each component to the "GPU", here the CPU too):
the offloaded pipeline makes the same picture as the resident one.

--offload sequential cannot be stood in for this way: with the CPU as the execution device, accelerate's
per-layer hooks hand the layers the very tensors of their offload map and fail (a TypeError in
`set_module_tensor_to_device`, with a bare diffusers pipeline too); on a GPU every layer gets a copy."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

import editforge
from editforge.models.loading import build_pipeline, prepare_load

INPUT = Image.new("RGB", (64, 48), (30, 120, 200))


def _picture(offload: str | None) -> np.ndarray:
    plan = prepare_load("tiny-qwen-image-edit-2509", device="cpu")  # offload needs CUDA: set after the check
    plan = dataclasses.replace(plan, options=dataclasses.replace(plan.options, offload=offload))
    pipe = build_pipeline(plan)
    return np.asarray(editforge.edit(pipe, [INPUT], "make the sky red", seed=3, steps=2))


def test_model_offload_makes_the_resident_pipelines_picture():
    assert np.array_equal(_picture("model"), _picture(None))
