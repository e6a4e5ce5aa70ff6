"""LoRA layers that can learn: the last block's text-stream output is discarded by the model, so no LoRA weights
go there; a LoRA parameter whose gradient stays exactly zero is reported; the saved file, which lacks those
layers, loads in diffusers and in EditForge."""

import logging
import pytest
import torch

import editforge
from editforge.benchmark.train import tiny_transformer
from editforge.models.registry import FAMILIES
from editforge.train import lora as lora_lib
from editforge.train.config import DEFAULT_TARGET_MODULES, LoraConfig
from editforge.train.lora import ZeroGradientWatch
from tests.helpers import train_tiny_transformer

TARGETS = [*DEFAULT_TARGET_MODULES, "img_mod.1", "txt_mod.1"]  # every Linear of a block
LAST_BLOCK_TEXT_OUTPUT = {"attn.add_q_proj", "attn.to_add_out", "txt_mlp.net.0.proj", "txt_mlp.net.2"}


pytestmark = pytest.mark.usefixtures("one_thread")


def ours(caplog):
    return [r for r in caplog.records if r.name == "editforge.train"]


def train_steps(steps: int = 3, watch_steps: int = 3):
    """`steps` training steps of the tiny transformer with every Linear of a block targeted; returns (transformer,
    {LoRA parameter: summed |grad|}, the watch)."""
    grads, watches = {}, []

    def watch(transformer, params):
        names = {id(p): name for name, p in transformer.named_parameters()}
        grads.update({names[id(p)]: 0.0 for p in params})
        for p in params:
            p.register_post_accumulate_grad_hook(
                lambda p: grads.__setitem__(names[id(p)], grads[names[id(p)]] + p.grad.abs().sum().item()))
        watches.append(ZeroGradientWatch(transformer, params, steps=watch_steps))

    transformer, _, _ = train_tiny_transformer(steps, lora=LoraConfig(rank=4, alpha=4, target_modules=TARGETS),
                                               on_prepared=watch, after_step=lambda: watches[0].step())
    return transformer, grads, watches[0]


def test_the_last_blocks_text_output_layers_get_no_lora_and_every_lora_parameter_learns(caplog):
    transformer, grads, watch = train_steps()
    last = len(transformer.transformer_blocks) - 1
    lora_layers = {name for name, _ in lora_lib.lora_layers(transformer)}
    every_linear = {f"transformer_blocks.{i}.{m}" for i in range(last + 1) for m in
                    ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                     "attn.add_v_proj", "attn.to_add_out", "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj",
                     "txt_mlp.net.2", "img_mod.1", "txt_mod.1")}
    assert lora_layers == every_linear - {f"transformer_blocks.{last}.{m}" for m in LAST_BLOCK_TEXT_OUTPUT}
    assert [name for name, total in grads.items() if total == 0] == []
    with caplog.at_level(logging.WARNING, logger="editforge.train"):
        assert watch.report() == []
    assert not ours(caplog)


def test_without_the_exclusion_exactly_those_layers_never_learn_and_the_watch_says_so(monkeypatch, caplog):
    """The claim behind the exclusion, shown on the model: a LoRA on the last block's text-output layers gets a
    gradient of exactly zero, every step, and nothing else does (lora_A gets a gradient once lora_B left zero)."""
    monkeypatch.setattr(lora_lib, "TEXT_STREAM_DEAD_ENDS", ())
    transformer, grads, watch = train_steps()
    last = len(transformer.transformer_blocks) - 1
    dead = {f"transformer_blocks.{last}.{m}.lora_{ab}.editforge.weight" for m in LAST_BLOCK_TEXT_OUTPUT for ab in "AB"}
    assert {name for name, total in grads.items() if total == 0} == dead
    with caplog.at_level(logging.WARNING, logger="editforge.train"):
        assert sorted(watch.report()) == sorted(dead)
    [record] = ours(caplog)
    assert record.getMessage().startswith("8 LoRA parameters got a gradient of exactly 0 in the first 3 steps")
    assert "\n" not in record.getMessage()


def test_the_watch_waits_for_lora_b_to_leave_zero():
    """At step 1 every lora_A has a zero gradient (lora_B starts at zero): a 1-step watch would cry wolf, so the
    watch counts from the first step and reports only after its steps."""
    _, grads, watch = train_steps(steps=1, watch_steps=3)
    assert any(total == 0 for name, total in grads.items() if ".lora_A." in name)
    assert watch.report() is None  # not due yet


def test_a_lora_without_the_dead_layers_loads_in_diffusers_and_in_editforge(tmp_path):
    """The saved files (diffusers and ComfyUI layouts) lack the last block's text-output layers: diffusers'
    load_lora_weights takes them without touching those layers, and EditForge's loader matches every layer."""
    from diffusers import QwenImageEditPlusPipeline

    from editforge.models.tiny import tiny_model_dir

    transformer, _, _ = train_steps(steps=2)
    last = len(transformer.transformer_blocks) - 1
    base = {k: v.clone() for k, v in tiny_transformer(FAMILIES["qwen-image-edit-2509"], torch.float32)
            .state_dict().items()}
    for export_format in ("diffusers", "comfyui"):
        path = lora_lib.save_lora(transformer, tmp_path / f"{export_format}.safetensors", export_format)
        saved = lora_lib.lora_state_dict(transformer)
        assert not [k for k in saved if k.startswith(f"transformer_blocks.{last}.attn.to_add_out")]
        pipe = QwenImageEditPlusPipeline.from_pretrained(tiny_model_dir("tiny-qwen-image-edit-2509"))
        pipe.load_lora_weights(str(path), adapter_name="trained")
        pipe.fuse_lora(components=["transformer"], lora_scale=1.0, adapter_names=["trained"])
        pipe.unload_lora_weights()
        fused = pipe.transformer.state_dict()
        name = f"transformer_blocks.{last}.attn.to_k"  # a live layer of the last block changed by the LoRA
        delta = saved[f"{name}.lora_B.weight"] @ saved[f"{name}.lora_A.weight"]
        assert delta.abs().max() > 1e-4
        torch.testing.assert_close(fused[f"{name}.weight"], base[f"{name}.weight"] + delta)
        for dead in LAST_BLOCK_TEXT_OUTPUT:
            key = f"transformer_blocks.{last}.{dead}.weight"
            assert torch.equal(fused[key], base[key]), key
        ours = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", loras=[str(path)], strict_lora=True)
        torch.testing.assert_close(ours.transformer.state_dict()[f"{name}.weight"], fused[f"{name}.weight"])
