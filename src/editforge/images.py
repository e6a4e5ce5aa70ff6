"""Opening user images safely: EXIF orientation, any mode to RGB, a decompression-bomb limit.

Every module that reads a user's picture goes through `open_rgb`, so a corrupt or hostile file fails
the same way everywhere: an `EditForgeError` naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from editforge.errors import EditForgeError

# 64 megapixels is far beyond what Qwen-Image ever sees (it works at ~1 MP) and far below what
# would exhaust memory; PIL's own default warns at 89 MP and only errors at twice that.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


def open_rgb(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS, data: bytes | None = None) -> Image.Image:
    """Load `path` as an 8-bit RGB image with its EXIF orientation applied. `data`: the file's bytes, read
    elsewhere (a synth worker on another machine gets them from the driver); `path` then only names it."""
    path = Path(path)
    if data is None and not path.is_file():
        raise EditForgeError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                if img.width * img.height > max_pixels:
                    raise EditForgeError(
                        f"image too large: {path} is {img.width}x{img.height}, "
                        f"more than {max_pixels / 1e6:.0f} MP; downscale it first"
                    )
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except EditForgeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise EditForgeError(f"not a readable image: {path} ({exc.__class__.__name__})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise EditForgeError(f"corrupt or truncated image: {path} ({exc})") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (RGBA, LA, P, CMYK, I;16, F, ...) to 8-bit RGB; transparency goes onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
