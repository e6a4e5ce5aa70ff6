"""Third-party chatter a user should not have to read, silenced message by message.

Each entry is one known, harmless message (a kernel torchao ships for other GPUs failing to load, a
deprecation inside torch that torchao triggers, DeepSpeed's note that a CPU machine has no GPU, peft's
caution on the second adapter, which is how EditForge stacks Lightning and user LoRAs); everything else those libraries say still gets through,
from the CLI and from the Python API alike.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings

# logger name -> the message dropped from it
LOG_MESSAGES = {
    # torchao's optional compiled kernels (mxfp8, cutlass) built for other GPUs or Pythons
    "torchao": re.compile(r"Failed to load \S*/torchao/_C\w*\.\S*\.so: "),
    # a deprecation inside torch that importing torchao triggers, once per enum
    "torch.utils._pytree": re.compile(r".* is an Enum subclass and is now natively supported by torch\.compile"),
    # the consequence of the first: EditForge quantizes in memory, it never loads torchao checkpoints
    "diffusers.quantizers.torchao.torchao_quantizer": re.compile(r"Unable to import `torchao` Tensor objects"),
    # printed to stdout whenever transformers imports an installed DeepSpeed on a machine without a GPU;
    # EditForge says itself when a GPU it was asked for is missing (--device)
    "DeepSpeed": re.compile(r"Setting accelerator to CPU\. If you have GPU or other accelerator, we were unable"),
}
PEFT_SECOND_ADAPTER = r"Already found a `peft_config` attribute in the model"
# a LoRA on a torchao (fp8) base cannot be merged into it; training never merges (the base stays frozen as is)
PEFT_TORCHAO_NO_MERGE = r"TorchaoLoraLinear was instantiated without `get_apply_tensor_subclass`"


class _DropMessage(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def install_log_filters() -> None:
    """Attach the filters to their loggers (before the libraries are imported, so import-time messages
    are caught too); safe to call again."""
    for name, pattern in LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) for f in logger.filters):
            logger.addFilter(_DropMessage(pattern))


@contextlib.contextmanager
def quiet_adapter_loading():
    """Loading a second LoRA adapter into one model is peft's documented multi-adapter use; its warning
    that the model already has a `peft_config` says nothing here. Nor does its caution that a LoRA on an fp8
    (torchao) base cannot be merged: EditForge trains such a LoRA and never merges it there."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PEFT_SECOND_ADAPTER, category=UserWarning)
        warnings.filterwarnings("ignore", message=PEFT_TORCHAO_NO_MERGE, category=UserWarning)
        yield


@contextlib.contextmanager
def no_progress_bars():
    """No diffusers / transformers progress bars ("Loading pipeline components", "Loading weights",
    "Writing model shards") while EditForge loads or saves a model; the previous setting comes back after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    enabled = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in enabled:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, was in enabled:
            if was:
                lib.enable_progress_bar()
