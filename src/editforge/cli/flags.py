"""Library messages name parameters; a command-line user typed flags. This is the one translation.

The library writes a parameter in backticks, alone or with a value: "`condition_pixels` is an area in
pixels", "use `lightning=4`", "(or `force=True` ...)". On the command line that reads "--condition-pixels is
an area in pixels", "use --lightning 4", "(or --force ...)". Backticked text that is no parameter (a command
such as `editforge edit`, a config key such as `data.source`) is left as it is.
"""

from __future__ import annotations

import re

# library parameter -> the flag that sets it
FLAGS = {
    "model": "--model", "lightning": "--lightning", "lightning_path": "--lightning-path", "loras": "--lora",
    "dtype": "--dtype", "quantize": "--quantize", "offload": "--offload", "device": "--device", "force": "--force",
    "strict_lora": "--strict-lora", "transformer": "--transformer", "blocks_to_swap": "--blocks-to-swap", "text_encoder": "--text-encoder", "vae": "--vae", "steps": "--steps", "cfg": "--cfg", "max_pixels": "--max-pixels",
    "condition_pixels": "--condition-pixels", "seed": "--seed", "out": "--out", "sheet": "--sheet",
    "columns": "--columns", "allow_outside": "--allow-outside", "retry_failed": "--retry-failed",
    "max_rows": "--max-rows", "resume": "--resume", "overrides": "--set", "family": "--family",
    "model_family": "--model-family", "format": "--format", "link": "--link", "only_accepted": "--only-accepted",
    "columns.target": "--target-column", "columns.controls": "--control-columns",
    "columns.instruction": "--instruction-column", "size": "--size", "port": "--port",
    "ray": "--ray", "workers": "--workers", "gpus_per_worker": "--gpus-per-worker",
    "skip_memory_check": "--skip-memory-check",
}
_PARAMETER = re.compile(r"`(?P<name>[a-z_.]+)(?:=(?P<value>[^`]*))?`")


def for_cli(message: str) -> str:
    """`message` with every backticked library parameter written as its flag."""
    def flag(match: re.Match) -> str:
        option = FLAGS.get(match["name"])
        if option is None:
            return match[0]
        value = match["value"]
        return option if value is None or value == "True" else f"{option} {value}"

    return _PARAMETER.sub(flag, message)
