"""A stand-in generator with no model, for tests, benchmarks and trying a workbook out.

`fake_generator()` returns `(images, prompt, seed) -> (image, params)` like the real one: a 64x64
noise picture that depends only on the seed, the prompt and the inputs, so it is reproducible and
passes the quality gate. `make_generator` is what `EDITFORGE_SYNTH_GENERATOR=editforge.sheet.fake:
make_generator` loads; `EDITFORGE_FAKE_DELAY=0.2` makes each picture take that many seconds, and
`EDITFORGE_FAKE_HOLD=FILE` makes it wait while FILE exists (a test holds a run mid-way for as long as it needs).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Sequence

import numpy as np
from PIL import Image

SIZE = 64


def fake_generator(delay: float = 0.0, hold: str | None = None):
    def generate(images: Sequence[Image.Image], prompt: str, seed: int):
        if delay:
            time.sleep(delay)
        while hold and os.path.exists(hold):
            time.sleep(0.02)
        shades = [img.resize((1, 1)).getpixel((0, 0)) for img in images]
        key = hashlib.blake2b(f"{seed}|{prompt}|{shades}".encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(key, "big"))
        pixels = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        return Image.fromarray(pixels), {"model": "fake", "prompt": prompt, "seed": seed}
    return generate


def make_generator():
    return fake_generator(float(os.environ.get("EDITFORGE_FAKE_DELAY", "0")), os.environ.get("EDITFORGE_FAKE_HOLD"))
