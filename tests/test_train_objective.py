"""Flow-matching pieces and the batch order, checked against the pipelines' own definitions."""

import math
from collections import Counter

import torch
from diffusers import QwenImageEditPlusPipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import calculate_shift

from editforge.models.tiny import QWEN_IMAGE_SCHEDULER
from editforge.train.buckets import BatchStream, epoch_batches
from editforge.train.objective import auto_shift, collate, pack, sample_sigmas


def test_pack_is_the_pipelines_pack():
    latents = torch.randn(2, 4, 6, 10)
    assert torch.equal(pack(latents), QwenImageEditPlusPipeline._pack_latents(latents, 2, 4, 6, 10))


def test_auto_shift_is_the_inference_schedulers_shift():
    c = QWEN_IMAGE_SCHEDULER
    for seq_len in (256, 1024, 4096, 8192):
        mu = calculate_shift(seq_len, c["base_image_seq_len"], c["max_image_seq_len"], c["base_shift"], c["max_shift"])
        assert math.isclose(auto_shift(c, seq_len), math.exp(mu), rel_tol=1e-9)


def test_timestep_sampling():
    def draw(method, shift=1.0):
        return sample_sigmas(20000, method=method, shift=shift, logit_mean=0.0, logit_std=1.0,
                             generator=torch.Generator().manual_seed(0))

    uniform, shifted, logit = draw("uniform"), draw("shift", 3.0), draw("logit_normal")
    for sigmas in (uniform, shifted, logit):
        assert 0 < sigmas.min() and sigmas.max() < 1
    assert abs(uniform.mean() - 0.5) < 0.01
    assert shifted.mean() > 0.65  # shift > 1 spends more steps at high noise
    assert abs(logit.median() - 0.5) < 0.02 and logit.std() < uniform.std()  # mass in the middle
    assert torch.equal(draw("shift", 3.0), shifted)  # seeded


def test_collate_pads_text_and_keeps_control_slots():
    a = {"prompt_embeds": torch.ones(3, 16), "target": torch.zeros(4, 4, 6), "control_0": torch.ones(4, 4, 4)}
    b = {"prompt_embeds": torch.ones(5, 16), "target": torch.ones(4, 4, 6), "control_0": torch.zeros(4, 4, 4)}
    batch = collate([a, b], "cpu", torch.float32)
    assert batch["prompt_embeds"].shape == (2, 5, 16)
    assert batch["prompt_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["prompt_embeds"][0, 3:].abs().sum() == 0
    assert batch["target"].shape == (2, 4, 4, 6) and [c.shape for c in batch["controls"]] == [(2, 4, 4, 4)]


BUCKETS = [("a",)] * 5 + [("b",)] * 3 + [("c",)]


def test_batches_stay_in_one_bucket_and_repeats_count():
    batches = epoch_batches(BUCKETS, batch_size=2, repeats=3, seed=0, epoch=0)
    assert all(len({BUCKETS[i] for i in batch}) == 1 for batch in batches)
    assert Counter(i for batch in batches for i in batch) == {i: 3 for i in range(len(BUCKETS))}
    assert batches != epoch_batches(BUCKETS, batch_size=2, repeats=3, seed=0, epoch=1)
    assert batches == epoch_batches(BUCKETS, batch_size=2, repeats=3, seed=0, epoch=0)


def test_stream_resumes_at_its_position_and_ranks_split_the_batches():
    stream = BatchStream(BUCKETS, batch_size=2, repeats=1, seed=1)
    first = [next(stream) for _ in range(8)]  # 6 batches per epoch (a: 3, b: 2, c: 1): crosses into epoch 1
    interrupted = BatchStream(BUCKETS, batch_size=2, repeats=1, seed=1)
    for _ in range(4):
        next(interrupted)
    resumed = BatchStream(BUCKETS, batch_size=2, repeats=1, seed=1)
    resumed.load_state_dict(interrupted.state_dict())
    assert [next(resumed) for _ in range(4)] == first[4:]

    # 4 ranks: 6 batches -> 2 rounds of 4, the last round wrapping around to the first batches.
    ranks = [BatchStream(BUCKETS, batch_size=2, repeats=1, seed=1, rank=r, world_size=4) for r in range(4)]
    seen = [tuple(next(s)) for s in ranks for _ in range(2)]
    assert set(seen) == {tuple(b) for b in first[:6]} and len(seen) == 8
