"""Options shared by every command that loads a model (edit, t2i, fuse, synth, ...), declared once."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from editforge.errors import EditForgeError

MODEL_HELP = "family (qwen-image-edit-2509, ...), tiny model (tiny-qwen-image-edit-2509, ...), hub id or local folder"

Model = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
Lightning = Annotated[
    str, typer.Option("--lightning", help="Lightning LoRA: 8 or 4 steps (cfg 1.0, distillation scheduler), or off")
]
LightningPath = Annotated[
    Optional[str], typer.Option("--lightning-path", help="a local copy of the Lightning file (else the hub cache)")
]
Loras = Annotated[
    Optional[list[str]], typer.Option("--lora", help="PATH[:SCALE], repeatable; fused into the weights")
]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="bf16 or fp32 (default: bf16 on GPU, fp32 on CPU)")]
Quantize = Annotated[str, typer.Option("--quantize", help="none, int8 (optimum-quanto) or fp8 (torchao), after fusing")]
Offload = Annotated[str, typer.Option("--offload", help="none, model or sequential CPU offload (GPU only)")]
VaeTiling = Annotated[bool, typer.Option("--vae-tiling", help="tiled VAE decode for very large outputs")]
Device = Annotated[Optional[str], typer.Option("--device", help="cuda, cuda:1, cpu (default: cuda if present)")]
Compile = Annotated[
    Optional[bool],
    typer.Option("--compile/--no-compile", help="torch.compile the transformer blocks; pays off after a few images (default: on for synth on a GPU, else off)"),
]
Force = Annotated[bool, typer.Option("--force", help="load a Lightning file even if its name says another family")]
StrictLora = Annotated[
    bool, typer.Option("--strict-lora", help="refuse a LoRA whose layers do not all match the transformer (else: warn)")
]

Seed = Annotated[int, typer.Option("--seed", help="random seed")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="denoising steps (default: the model's / Lightning's)")]
Cfg = Annotated[Optional[float], typer.Option("--cfg", help="true CFG scale (default 4.0; 1.0 with Lightning)")]
NegativePrompt = Annotated[
    Optional[str], typer.Option("--negative-prompt", help="only has an effect when cfg > 1")
]
MaxPixels = Annotated[
    Optional[int], typer.Option("--max-pixels", help="output / VAE area in pixels (default 1024*1024; tiny: 64*64)")
]
ConditionPixels = Annotated[
    Optional[int], typer.Option("--condition-pixels", help="Edit-2509 VL-encoder area per image (default 384*384)")
]


def parse_lightning(value: str) -> int | None:
    value = value.strip().lower()
    if value in ("off", "none", "0", ""):
        return None
    if value in ("4", "8"):
        return int(value)
    raise EditForgeError(f"--lightning must be 8, 4 or off, not {value!r}")


def parse_choice(value: str) -> str | None:
    return None if value.strip().lower() in ("none", "off", "") else value.strip().lower()


def load_options(command_args: dict) -> dict:
    """The keyword arguments for `editforge.load_pipeline` from a command's parsed options (its `locals()`)."""
    args = command_args
    return dict(
        lightning=parse_lightning(args["lightning"]),
        lightning_path=args["lightning_path"],
        loras=args["lora"] or (),
        dtype=args["dtype"],
        quantize=parse_choice(args["quantize"]),
        offload=parse_choice(args["offload"]),
        vae_tiling=args["vae_tiling"],
        device=args["device"],
        force=args["force"],
        strict_lora=args["strict_lora"],
        compile=args["compile"],
    )
