"""Model families, tiny offline models, loading (dtype, LoRA, Lightning, fuse, quantize, offload)."""

from editforge.quiet import install_log_filters

install_log_filters()  # before anything here imports diffusers (and, through it, torchao)
