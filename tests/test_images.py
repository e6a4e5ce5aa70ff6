"""Every user image goes through open_rgb: orientation, modes, corrupt files, bombs."""

import numpy as np
import pytest
from PIL import Image

from editforge.errors import EditForgeError
from editforge.images import open_rgb


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert open_rgb(path).size == (20, 40)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "L", "1"])
def test_modes_become_rgb(tmp_path, mode):
    path = tmp_path / f"img-{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    Image.new("RGB", (8, 8), (10, 200, 30)).convert(mode).save(path)
    img = open_rgb(path)
    assert img.mode == "RGB" and img.size == (8, 8)


def test_transparent_pixels_go_onto_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert open_rgb(path).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_keeps_its_range(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(path)
    assert open_rgb(path).getpixel((0, 0)) == (255, 255, 255)


def test_missing_corrupt_and_truncated(tmp_path):
    with pytest.raises(EditForgeError, match="not found"):
        open_rgb(tmp_path / "nope.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not an image")
    with pytest.raises(EditForgeError, match="junk.png"):
        open_rgb(junk)
    good = tmp_path / "good.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(EditForgeError, match="truncated.png"):
        open_rgb(truncated)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(path)
    with pytest.raises(EditForgeError, match="too large"):
        open_rgb(path, max_pixels=1000 * 1000)
