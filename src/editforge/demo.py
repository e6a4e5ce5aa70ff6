"""A demo annotation workbook: a few drawn pictures and one row per synth case, ready for `editforge synth`."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from editforge.errors import EditForgeError
from editforge.sheet.schema import INSTRUCTION_COLUMNS, NEED_GEN, PROMPT, RAW_IMAGE, REF_KEYS
from editforge.sheet.workbook import create_workbook

HEADERS = [RAW_IMAGE, *REF_KEYS, PROMPT, INSTRUCTION_COLUMNS[0], NEED_GEN]


def _picture(path: Path, color: tuple[int, int, int], shape: str) -> str:
    img = Image.new("RGB", (96, 96), (235, 232, 220))
    draw = ImageDraw.Draw(img)
    box = (20, 20, 76, 76)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color, outline=(20, 20, 20), width=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path.relative_to(path.parent.parent).as_posix()


def make_demo_workbook(folder: str | Path) -> Path:
    """Write `folder/demo.xlsx` and its images; refuses to overwrite an existing demo."""
    folder = Path(folder)
    workbook = folder / "demo.xlsx"
    if workbook.exists():
        raise EditForgeError(f"{workbook} exists already; pick another folder or delete it")
    red = _picture(folder / "images" / "red_circle.png", (200, 40, 40), "circle")
    blue = _picture(folder / "images" / "blue_square.png", (40, 60, 200), "square")
    green = _picture(folder / "images" / "green_circle.png", (40, 170, 60), "circle")
    rows = [
        # refs only -> generate the sample (gen_raw), from two references at once (Edit-2509)
        [None, red, blue, None, "put the circle on top of the square", "stack them", True],
        # sample only -> generate a first reference (gen_ref)
        [green, None, None, None, "turn the circle into a triangle", "make it a triangle", "TRUE"],
        # sample and one reference -> generate one more reference (gen_extra_ref)
        [blue, red, None, None, "paint the square yellow", "make it yellow", "yes"],
        # need_gen false -> left alone
        [red, blue, None, None, "nothing to do", "nothing", False],
        # need_gen true but no prompt -> skipped with a reason
        [None, green, None, None, None, None, 1],
    ]
    return create_workbook(workbook, HEADERS, rows)
