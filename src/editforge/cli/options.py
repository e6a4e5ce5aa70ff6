"""Options shared by the commands that load a model (edit, t2i, fuse, synth), declared once.

The loading flags become a `LoadOptions`, the generation flags a `GenerationOptions`: a command declares a
parameter of that type and `LOAD.expand(...)` / `GENERATION.expand(...)` puts the flags in its place, so
`--help` lists them (with their choices) and the command receives one typed value.

    @app.command()
    @LOAD.expand("load", lightning=LightningSteps.EIGHT)   # this command's own defaults
    def synth(workbook: Path, load: LoadOptions = None): ...
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Callable, Iterable, Optional

import typer

from editforge.inference.options import GenerationOptions
from editforge.models.options import Dtype, LightningSteps, LoadOptions, Offload, Quantize
from editforge.models.registry import EDIT_FAMILIES, FAMILIES


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A str `Enum` of `values`: typer lists them in `--help` and refuses any other value."""
    return Enum(name, {value: value for value in values}, type=str)


def value(choice: Any) -> Any:
    """The plain value of a choice typer passed (None stays None)."""
    return getattr(choice, "value", choice)


FamilyName = choices("FamilyName", FAMILIES)
EditFamilyName = choices("EditFamilyName", EDIT_FAMILIES)

MODEL_HELP = "family (qwen-image-edit-2509, ...), tiny model (tiny-qwen-image-edit-2509, ...), hub id or local folder"

Model = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
Seed = Annotated[int, typer.Option("--seed", help="random seed")]


@dataclass(frozen=True)
class Flag:
    name: str  # the options field it sets
    annotation: Any  # Annotated[type, typer.Option(...)]
    default: Any


class OptionGroup:
    def __init__(self, build: Callable[..., Any], panel: str, flags: list[Flag]):
        self.build, self.flags = build, flags
        for flag in flags:
            typing.get_args(flag.annotation)[1].rich_help_panel = panel

    def expand(self, target: str, *, only: tuple[str, ...] | None = None, **defaults):
        """Replace the command's parameter `target` by this group's flags (`only` some of them, with `defaults`
        of the command's own); the command is called with the options built from them."""
        def decorate(command):
            flags = [f for f in self.flags if only is None or f.name in only]
            hints = typing.get_type_hints(command, include_extras=True)
            params = []
            for param in inspect.signature(command).parameters.values():
                if param.name == target:
                    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.annotation,
                                                 default=defaults.get(f.name, f.default)) for f in flags]
                else:
                    params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY,
                                                annotation=hints.get(param.name, param.annotation)))

            @functools.wraps(command)
            def run(**kwargs):
                kwargs[target] = self.build(**{f.name: kwargs.pop(f.name) for f in flags})
                return command(**kwargs)

            run.__signature__ = inspect.Signature(params)
            run.__annotations__ = {p.name: p.annotation for p in params}
            return run

        return decorate


LOAD = OptionGroup(
    lambda loras, **values: LoadOptions(loras=tuple(loras or ()), **values), "Loading the model", [
        Flag("lightning", Annotated[LightningSteps, typer.Option(
            "--lightning", help="Lightning LoRA of the model's family: 8 or 4 steps (cfg 1.0, its scheduler), or off")],
            LightningSteps.OFF),
        Flag("lightning_path", Annotated[Optional[str], typer.Option(
            "--lightning-path", help="a local copy of the Lightning file (else the hub cache)")], None),
        Flag("loras", Annotated[Optional[list[str]], typer.Option(
            "--lora", help="PATH[:SCALE], repeatable; fused into the weights")], None),
        Flag("dtype", Annotated[Optional[Dtype], typer.Option(
            "--dtype", help="weights' dtype (default: bf16 on GPU, fp32 on CPU)")], None),
        Flag("quantize", Annotated[Quantize, typer.Option(
            "--quantize", help="int8 (optimum-quanto) or fp8 (torchao), after fusing")], Quantize.NONE),
        Flag("offload", Annotated[Offload, typer.Option("--offload", help="CPU offload (GPU only)")], Offload.NONE),
        Flag("blocks_to_swap", Annotated[int, typer.Option(
            "--blocks-to-swap", min=0, help="keep N transformer blocks' weights in CPU memory, copied to the GPU "
                                            "ahead of each use")], 0),
        Flag("transformer", Annotated[Optional[str], typer.Option(
            "--transformer", help="a single-file transformer instead of the model's: ComfyUI .safetensors (bf16, "
                                  "fp8, scaled fp8) or GGUF (Q8_0, Q4_K, ...)")], None),
        Flag("text_encoder", Annotated[Optional[str], typer.Option(
            "--text-encoder", help="a single-file text encoder (ComfyUI's qwen_2.5_vl_7b*.safetensors)")], None),
        Flag("vae", Annotated[Optional[str], typer.Option(
            "--vae", help="a single-file VAE (ComfyUI's qwen_image_vae.safetensors)")], None),
        Flag("vae_tiling", Annotated[bool, typer.Option(
            "--vae-tiling", help="tiled VAE decode for very large outputs")], False),
        Flag("device", Annotated[Optional[str], typer.Option(
            "--device", help="cuda, cuda:1, cpu (default: cuda if present)")], None),
        Flag("force", Annotated[bool, typer.Option(
            "--force", help="load a Lightning file even if its name says another family")], False),
        Flag("strict_lora", Annotated[bool, typer.Option(
            "--strict-lora", help="refuse a LoRA whose layers do not all match the transformer (else: warn)")], False),
        Flag("skip_memory_check", Annotated[bool, typer.Option(
            "--skip-memory-check", help="load even when the measured memory needs exceed the GPU's")], False),
        Flag("compile", Annotated[Optional[bool], typer.Option(
            "--compile/--no-compile", help="torch.compile the transformer blocks; pays off after a few images "
                                           "(default: on for synth on a GPU, else off)")], False),
    ])

GENERATION = OptionGroup(GenerationOptions, "Generation", [
    Flag("steps", Annotated[Optional[int], typer.Option(
        "--steps", help="denoising steps (default: the model's / Lightning's)")], None),
    Flag("cfg", Annotated[Optional[float], typer.Option(
        "--cfg", help="true CFG scale (default 4.0; 1.0 with Lightning)")], None),
    Flag("negative_prompt", Annotated[Optional[str], typer.Option(
        "--negative-prompt", help="only has an effect when cfg > 1")], None),
    Flag("max_pixels", Annotated[Optional[int], typer.Option(
        "--max-pixels", help="output / VAE area in pixels (default 1024*1024; tiny: 64*64)")], None),
    Flag("condition_pixels", Annotated[Optional[int], typer.Option(
        "--condition-pixels", help="Edit-2509/2511: VL-encoder area per image (default 384*384)")], None),
])
