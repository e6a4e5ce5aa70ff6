"""Model families, tiny offline models, loading (dtype, LoRA, Lightning, fuse, quantize, offload)."""
