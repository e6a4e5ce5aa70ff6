"""Qwen-Image's rectified-flow objective.

A noisy latent is the straight line x_t = (1 - s) x_0 + s n between the data x_0 and noise n at
sigma s in (0, 1); the transformer is asked for the velocity n - x_0 (the scheduler steps along it at
inference, and gets `timestep / 1000`, i.e. s). Edit models see the clean control latents appended after
the noisy target tokens, exactly as the Edit/EditPlus pipelines pack them, and the loss covers the target
tokens only: the controls are conditions, not predictions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H/2 * W/2, C * 4]: 2x2 patches as tokens (the pipelines' `_pack_latents`)."""
    b, c, h, w = latents.shape
    latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // 2) * (w // 2), c * 4)


def auto_shift(scheduler_config: dict, image_seq_len: int) -> float:
    """The shift the inference scheduler applies at this image size (exponential time shift e^mu)."""
    base_len, max_len = scheduler_config["base_image_seq_len"], scheduler_config["max_image_seq_len"]
    base_shift, max_shift = scheduler_config["base_shift"], scheduler_config["max_shift"]
    slope = (max_shift - base_shift) / (max_len - base_len)
    return math.exp(image_seq_len * slope + base_shift - slope * base_len)


def sample_sigmas(batch_size: int, *, method: str, shift: float, logit_mean: float, logit_std: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Training sigmas: uniform, logit-normal (SD3), or uniform pushed towards noise by `shift`."""
    if method == "logit_normal":
        return torch.sigmoid(torch.randn(batch_size, generator=generator) * logit_std + logit_mean)
    u = torch.rand(batch_size, generator=generator)
    if method == "shift":
        return shift * u / (1 + (shift - 1) * u)
    return u


def draw_noise(target: torch.Tensor, tc, scheduler_config: dict, seed: tuple[int, int, int]):
    """(sigmas, noise) for one micro-batch, from a generator seeded by (run seed, micro-step, rank) alone:
    a resumed run draws exactly what the uninterrupted run drew, whatever RNG state came before."""
    run_seed, micro_step, rank = seed
    generator = torch.Generator().manual_seed(run_seed * 1_000_003 + micro_step * 1009 + rank)
    shift = tc.shift if tc.shift != "auto" else auto_shift(scheduler_config, target.shape[2] * target.shape[3] // 4)
    sigmas = sample_sigmas(target.shape[0], method=tc.timestep_sampling, shift=shift, logit_mean=tc.logit_mean,
                           logit_std=tc.logit_std, generator=generator)
    return sigmas.to(target.device), torch.randn(target.shape, generator=generator).to(target.device)


def transformer_inputs(batch: dict, sigmas: torch.Tensor, noise: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """(the transformer's keyword arguments, the velocity it should predict for the target tokens).

    The same inputs the Edit/EditPlus/Qwen-Image pipelines feed it at sigma `sigmas` and this noise:
    `tests/test_train_objective.py` checks them against the pipelines' own calls.
    """
    target = batch["target"]
    x0 = pack(target)
    n = pack(noise.to(x0))
    s = sigmas.to(x0).view(-1, 1, 1)
    noisy = (1 - s) * x0 + s * n
    shapes = [(1, target.shape[2] // 2, target.shape[3] // 2)]
    shapes += [(1, c.shape[2] // 2, c.shape[3] // 2) for c in batch["controls"]]
    inputs = dict(
        hidden_states=torch.cat([noisy, *[pack(c) for c in batch["controls"]]], dim=1),
        encoder_hidden_states=batch["prompt_embeds"],
        encoder_hidden_states_mask=batch["prompt_mask"],
        timestep=sigmas.to(x0),
        img_shapes=[shapes] * target.shape[0],
    )
    return inputs, n - x0


def flow_matching_loss(transformer, batch: dict, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """MSE between predicted and true velocity on the target tokens of `batch` (see `collate`)."""
    inputs, velocity = transformer_inputs(batch, sigmas, noise)
    prediction = transformer(**inputs, return_dict=False)[0][:, : velocity.shape[1]]
    return F.mse_loss(prediction.float(), velocity.float())


def collate(tensors: list[dict], device, dtype) -> dict:
    """Stack samples of one bucket; text embeddings are right-padded to the longest, with a mask that is None
    when nothing is padded (as the pipelines' encode_prompt returns it: the fast attention kernels take none)."""
    longest = max(t["prompt_embeds"].shape[0] for t in tensors)
    embeds = torch.zeros(len(tensors), longest, tensors[0]["prompt_embeds"].shape[1])
    mask = torch.zeros(len(tensors), longest, dtype=torch.long)
    for i, t in enumerate(tensors):
        n = t["prompt_embeds"].shape[0]
        embeds[i, :n], mask[i, :n] = t["prompt_embeds"], 1
    n_controls = sum(1 for k in tensors[0] if k.startswith("control_"))

    def stack(name):
        return torch.stack([t[name] for t in tensors]).to(device, dtype)

    return {
        "target": stack("target"),
        "controls": [stack(f"control_{i}") for i in range(n_controls)],
        "prompt_embeds": embeds.to(device, dtype),
        "prompt_mask": None if mask.all() else mask.to(device),
    }
