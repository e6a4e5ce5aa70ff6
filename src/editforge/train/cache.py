"""Encode every sample once: VAE latents of target and controls, and the text embedding, on disk.

The encoders are 15 GB (Qwen2.5-VL) and 0.2 GB (VAE) and frozen, so each sample is encoded once, saved
as one safetensors file, and the encoders leave the GPU before training starts. A file's name is a hash
of the sample's bytes and of every setting that changes the tensors (model, areas, dtype), so a later
run reuses what is still valid and recomputes only what changed.

The preprocessing is the inference pipeline's, step for step: the same size rule, the same
`pipe.image_processor` resize/preprocess calls, the pipeline's own `encode_prompt` (prompt template,
"Picture N:" image tokens, dropped prefix tokens, the token limit of the pipeline call) and the same
latent normalisation.
`tests/test_train_cache.py` checks the result against what `editforge.generate` feeds the transformer.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from editforge.errors import EditForgeError
from editforge.files import atomic_write
from editforge.images import open_rgb
from editforge.inference.sizes import dimensions_for_area, size_problem
from editforge.models.info import family_of, model_info

CACHE_VERSION = 1  # bump when the encoding changes, so old files are never half-reused


@dataclass(frozen=True)
class CachedSample:
    path: Path
    bucket: tuple  # (target latent shape, control latent shapes...): samples that can share a batch


@dataclass
class CacheReport:
    samples: list[CachedSample]
    computed: int
    reused: int
    skipped: list[str]  # "path: reason" for each sample that could not be read


def condition_inputs(pipe, images, vae_pixels: int, condition_pixels: int | None):
    """(images for the VL encoder, pixel tensors for the VAE), sized as the family's pipeline sizes them."""
    if not images:
        return None, []
    processor = pipe.image_processor
    if family_of(pipe).condition_pixels is None:
        # Edit v1 resizes its one image to the VAE area and feeds that to both encoders.
        image = images[0]
        width, height = dimensions_for_area(vae_pixels, image.width / image.height)
        image = processor.resize(image, height, width)
        return image, [processor.preprocess(image, height, width).unsqueeze(2)]
    prompt_images, vae_inputs = [], []
    for image in images:
        ratio = image.width / image.height
        cond_width, cond_height = dimensions_for_area(condition_pixels, ratio)
        vae_width, vae_height = dimensions_for_area(vae_pixels, ratio)
        prompt_images.append(processor.resize(image, cond_height, cond_width))
        vae_inputs.append(processor.preprocess(image, vae_height, vae_width).unsqueeze(2))
    return prompt_images, vae_inputs


def encode_prompt(pipe, instruction: str, prompt_images):
    """The pipeline's own prompt encoding, cut to the tokens a pipeline call keeps: (embeds [1, L, D], mask)."""
    family = family_of(pipe)
    kwargs = {"image": prompt_images} if family.is_edit else {}
    if family.prompt_max_tokens is not None:
        kwargs["max_sequence_length"] = family.prompt_max_tokens
    return pipe.encode_prompt(prompt=instruction, device=pipe.text_encoder.device, **kwargs)


@torch.no_grad()
def vae_latents(pipe, pixels: torch.Tensor) -> torch.Tensor:
    """[1, 3, 1, H, W] pixels in [-1, 1] -> normalised latents [C, H/8, W/8], as the Edit pipelines encode."""
    vae = pipe.vae
    latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
    std = torch.tensor(vae.config.latents_std).view(shape).to(latents)
    return ((latents - mean) / std)[0, :, 0]


@torch.no_grad()
def encode_sample(pipe, target, controls, instruction: str, vae_pixels: int, condition_pixels: int | None) -> dict:
    """Tensors of one sample: `target`, `control_0..n`, `prompt_embeds` ([L, D], no padding)."""
    prompt_images, vae_inputs = condition_inputs(pipe, controls, vae_pixels, condition_pixels)
    embeds, mask = encode_prompt(pipe, instruction, prompt_images)
    # The pipeline returns no mask when nothing is padded (always, for one prompt); keep the unpadded tokens.
    tensors = {"prompt_embeds": embeds[0] if mask is None else embeds[0][mask[0].bool()]}
    width, height = dimensions_for_area(vae_pixels, target.width / target.height)
    tensors["target"] = vae_latents(pipe, pipe.image_processor.preprocess(target, height, width).unsqueeze(2))
    for i, pixels in enumerate(vae_inputs):
        tensors[f"control_{i}"] = vae_latents(pipe, pixels)
    return {name: t.detach().cpu().contiguous() for name, t in tensors.items()}


def settings_fingerprint(pipe, vae_pixels: int, condition_pixels: int | None) -> str:
    """Everything besides the sample's own bytes that changes the cached tensors."""
    family = family_of(pipe)
    settings = {
        "version": CACHE_VERSION,
        "family": family.name,
        "model": model_info(pipe).model,
        # a text encoder or VAE from a single file has other weights than the folder's (keys absent otherwise: old
        # caches stay valid)
        **{f"{c}_file": label for c, label in model_info(pipe).files.items() if c in ("text_encoder", "vae")},
        "vae": dict(pipe.vae.config),
        "text_encoder": pipe.text_encoder.config.to_dict(),
        "dtype": str(pipe.text_encoder.dtype),
        "vae_pixels": vae_pixels,
        "condition_pixels": condition_pixels if family.condition_pixels else None,
        "drop_tokens": family.prompt_drop_tokens,
        "prompt_max_tokens": family.prompt_max_tokens,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


class FileDigests:
    """sha256 of image files, remembered in the cache folder by (path, size, mtime) so that a later run
    finds its cache entries without reading every image of the dataset again (on every rank)."""

    NAME = "file-digests.json"

    def __init__(self, cache_dir: Path):
        self.path = cache_dir / self.NAME
        try:
            self.known: dict[str, str] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except ValueError:  # a damaged index only costs the re-hashing
            self.known = {}
        self.changed = False

    def __call__(self, path) -> bytes:
        stat = os.stat(path)
        key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self.known:
            self.known[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            self.changed = True
        return bytes.fromhex(self.known[key])

    def save(self) -> None:
        if self.changed:
            atomic_write(self.path, lambda fh: fh.write(json.dumps(self.known).encode()), durable=False)


def sample_key(sample, fingerprint: str, file_digest=lambda path: hashlib.sha256(Path(path).read_bytes()).digest()) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    for path in [sample.target, *sample.controls]:
        digest.update(file_digest(path))
    digest.update(sample.instruction.encode())
    return digest.hexdigest()


def bucket_of(path: Path) -> tuple:
    with safe_open(str(path), framework="pt") as fh:
        names = sorted(k for k in fh.keys() if k.startswith("control_"))
        return tuple(tuple(fh.get_slice(k).get_shape()) for k in ["target", *names])


def build_cache(pipe, samples, cache_dir: Path, *, vae_pixels: int, condition_pixels: int | None,
                rank: int = 0, world_size: int = 1, barrier=lambda: None, progress=None) -> CacheReport:
    """Encode the samples missing from `cache_dir` (each rank its share), then index all of them.

    A sample whose images are missing or unreadable is skipped and reported, never fatal: one bad file in
    ten thousand should not stop a night's training. Its failure is cached too (a `.bad` file named by the
    same content hash), so every rank and later run agrees on what was skipped without re-reading it.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = settings_fingerprint(pipe, vae_pixels, condition_pixels)
    keys, skipped, computed = [], [], 0
    file_digests = FileDigests(cache_dir)
    for sample in samples:
        try:
            keys.append(sample_key(sample, fingerprint, file_digests))
        except OSError as exc:
            keys.append(None)
            skipped.append(f"{sample.target}: {exc.strerror or exc}")
    if rank == 0:
        file_digests.save()
    for i, (sample, key) in enumerate(zip(samples, keys)):
        if key is None or i % world_size != rank:
            continue
        path, bad = cache_dir / f"{key}.safetensors", cache_dir / f"{key}.bad"
        if not path.exists() and not bad.exists():
            try:
                images = [open_rgb(p) for p in [sample.target, *sample.controls]]
                _check_sizes(images, [sample.target, *sample.controls], vae_pixels, condition_pixels)
            except EditForgeError as exc:
                reason = str(exc)
                atomic_write(bad, lambda fh: fh.write(reason.encode()))
            else:
                tensors = encode_sample(pipe, images[0], images[1:], sample.instruction, vae_pixels, condition_pixels)
                atomic_write(path, lambda fh: fh.write(save(tensors)))
                computed += 1
        if progress:
            progress()
    barrier()
    cached = []
    for sample, key in zip(samples, keys):
        if key is None:
            continue
        path, bad = cache_dir / f"{key}.safetensors", cache_dir / f"{key}.bad"
        if bad.exists():
            skipped.append(bad.read_text())
        else:
            cached.append(CachedSample(path, bucket_of(path)))
    return CacheReport(cached, computed, len(cached) - computed, skipped)


def _check_sizes(images, paths, vae_pixels: int, condition_pixels: int | None) -> None:
    """A picture the pipeline's resizing would squash to nothing is this sample's problem, not a crash."""
    areas = {"output": vae_pixels, **({"condition": condition_pixels} if condition_pixels else {})}
    for image, path in zip(images, paths):
        problem = size_problem(image.size, areas)
        if problem is not None:
            raise EditForgeError(f"{path}: {problem}")


def load_cached(paths: list[Path]) -> list[dict]:
    from safetensors.torch import load_file

    return [load_file(str(p)) for p in paths]
