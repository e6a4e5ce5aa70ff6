"""EditForge: build image-editing datasets with Qwen-Image-Edit and fine-tune LoRAs on them."""

__version__ = "0.1.0"
