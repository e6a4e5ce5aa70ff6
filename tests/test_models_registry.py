"""How --model strings resolve, and the tiny offline models."""

import json

import pytest
import torch

from editforge.errors import EditForgeError
from editforge.models.info import family_of
from editforge.models.registry import EDITFORGE_META, FAMILIES, TINY_MODELS, resolve_model
from editforge.models.tiny import build_tiny_pipeline


def test_family_names_resolve_to_hub_ids():
    spec = resolve_model("qwen-image-edit-2509")
    assert spec.source == "Qwen/Qwen-Image-Edit-2509" and spec.family.max_images == 3
    assert spec.max_pixels == 1024 * 1024 and spec.condition_pixels == 384 * 384


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_tiny_models_are_pipeline_folders_with_small_defaults(name):
    spec = resolve_model(name)
    index = json.loads((spec.source and open(f"{spec.source}/model_index.json").read()))
    assert index["_class_name"] == TINY_MODELS[name].pipeline_class
    assert spec.is_local and spec.max_pixels == 64 * 64
    # a folder path resolves to the same thing as the tiny name
    assert resolve_model(spec.source).family is spec.family


def test_tiny_weights_are_reproducible():
    family = FAMILIES["qwen-image-edit-2509"]
    a, b = build_tiny_pipeline(family), build_tiny_pipeline(family)
    for part in ("transformer", "vae", "text_encoder"):
        for (name, x), (_, y) in zip(getattr(a, part).state_dict().items(), getattr(b, part).state_dict().items()):
            assert torch.equal(x, y), f"{part}.{name} differs between builds"


def test_tokenizer_knows_qwen_special_tokens(tiny_edit_plus):
    tok = tiny_edit_plus.tokenizer
    ids = tok("<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|><|im_end|>").input_ids
    for special in ("<|im_start|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|im_end|>"):
        assert tok.convert_tokens_to_ids(special) in ids
    assert tiny_edit_plus.text_encoder.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")


@pytest.mark.parametrize(
    "model, message",
    [
        ("./no/such/folder", "no such folder"),
        ("nobody/not-cached-model", "not in the local Hugging Face cache"),
        ("just-a-word", "not a family"),
    ],
)
def test_bad_models_say_what_to_do(model, message):
    with pytest.raises(EditForgeError, match=message):
        resolve_model(model)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(EditForgeError, match="model_index.json"):
        resolve_model(str(tmp_path))


def test_uncached_family_offline_and_files_checked_before_the_load(tmp_path):
    import editforge

    with pytest.raises(EditForgeError, match=r"Qwen/Qwen-Image-Edit-2509 is not in the local .*hf download"):
        editforge.load_pipeline("qwen-image-edit-2509", device="cpu")
    # a bad LoRA is reported before any attempt to load the (here: unreachable) model
    with pytest.raises(EditForgeError, match="LoRA file not found"):
        editforge.load_pipeline("qwen-image-edit-2509", device="cpu", loras=[str(tmp_path / "gone.safetensors")])
    with pytest.raises(EditForgeError, match="is a folder"):
        editforge.load_pipeline("qwen-image-edit-2509", device="cpu", loras=[str(tmp_path)])


def test_family_rules_are_the_diffusers_pipelines():
    """What a family says about its pipeline is what diffusers does: the token limit of a call (so generation and
    the training cache keep the same prompt tokens as a bare diffusers call) and the dropped template prefix."""
    import inspect

    import diffusers

    for name, family in FAMILIES.items():
        cls = getattr(diffusers, family.pipeline_class)
        limit = inspect.signature(cls.__call__).parameters["max_sequence_length"].default
        # the Edit pipelines' encode_prompt keeps every token whatever the limit
        assert family.prompt_max_tokens == (None if family.is_edit else limit), name
        pipe = build_tiny_pipeline(family)
        assert family.prompt_drop_tokens == pipe.prompt_template_encode_start_idx, name
        # built by hand (nothing attached), a pipeline is told by its class and transformer config: 2512 has
        # Qwen-Image's (only EditForge's own folders and hub ids name it)
        assert family_of(pipe) is family or (name, family_of(pipe).name) == ("qwen-image-2512", "qwen-image")


def test_family_of_a_foreign_pipeline_is_an_error():
    with pytest.raises(EditForgeError, match="StableDiffusionPipeline is not a Qwen-Image pipeline"):
        family_of(type("StableDiffusionPipeline", (), {})())


def test_2511_and_2512_are_families_of_their_own():
    """Edit-2511 is the EditPlus pipeline with condition tokens at timestep 0; Qwen-Image-2512 is Qwen-Image's
    pipeline with its own Lightning LoRAs. Each resolves from its name and hub id."""
    edit_2511, edit_2509 = FAMILIES["qwen-image-edit-2511"], FAMILIES["qwen-image-edit-2509"]
    assert edit_2511.pipeline_class == edit_2509.pipeline_class == "QwenImageEditPlusPipeline"
    assert edit_2511.transformer_config == {"zero_cond_t": True} and edit_2511.max_images == 3
    assert resolve_model("Qwen/Qwen-Image-Edit-2511").family is edit_2511
    assert resolve_model("Qwen/Qwen-Image-2512").family is FAMILIES["qwen-image-2512"]
    assert FAMILIES["qwen-image-2512"].lightning_repo == "lightx2v/Qwen-Image-2512-Lightning"


def test_a_folder_without_editforge_meta_is_told_by_its_transformer_config(tmp_path):
    """A plain diffusers folder (no editforge.json): 2509 and 2511 share a pipeline class, the transformer's
    `zero_cond_t` tells them apart, for the folder and for the loaded pipeline alike."""
    import shutil

    for name in ("qwen-image-edit-2511", "qwen-image-edit-2509"):
        folder = tmp_path / name
        shutil.copytree(resolve_model(f"tiny-{name}").source, folder)
        (folder / EDITFORGE_META).unlink()
        assert resolve_model(str(folder)).family is FAMILIES[name]
        assert family_of(build_tiny_pipeline(FAMILIES[name])) is FAMILIES[name]
