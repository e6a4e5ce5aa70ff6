"""Single-file checkpoints: the tiny transformer, text encoder and VAE written as ComfyUI and GGUF users have them load
with the weights they hold (fp8 and GGUF: exactly what their format decodes to, within its quantization error of
the originals) and make the same picture; a wrong file is one line before anything loads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import editforge
from editforge.errors import EditForgeError
from editforge.inference.metadata import read_params
from editforge.models import single_file
from editforge.models.info import model_info
from editforge.models.tiny import tiny_model_dir
from editforge.train import train
from editforge.train.cache import settings_fingerprint
from editforge.train.config import apply_override, validate
from tests import kquants
from tests.helpers import noise_image, write_lora, write_samples

MODEL = "tiny-qwen-image-edit-2509"
FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def originals():
    folder = tiny_model_dir(MODEL)
    transformer = load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    text_encoder = load_file(str(folder / "text_encoder" / "model.safetensors"))
    return {"transformer": transformer, "text_encoder": text_encoder}


def is_matrix(name: str, tensor: torch.Tensor) -> bool:
    return name.endswith(".weight") and tensor.dim() == 2


def scaled_fp8(tensors: dict, scale_name: str) -> tuple[dict, dict]:
    """ComfyUI's scaled fp8: each matrix divided by a per-tensor scale (absmax / 448) and stored in fp8, the scale
    beside it. Returns (file tensors, what the model must get: fp8 value times scale)."""
    out, decoded = {}, {}
    for name, tensor in tensors.items():
        if is_matrix(name, tensor):
            # a scale far from 1 (the tiny weights are ~0.02): a loader that forgets it is off by ~10^4
            scale = tensor.abs().max().float() / FP8_MAX
            stored = (tensor.float() / scale).to(FP8)
            out[name] = stored
            out[name.removesuffix(".weight") + scale_name] = scale.reshape(())
            decoded[name] = stored.float() * scale
        else:
            out[name] = tensor.to(torch.bfloat16)
            decoded[name] = out[name].float()
    return out, decoded


def comfyui_transformer(layout: str, tensors: dict) -> tuple[dict, dict]:
    """(file tensors, the weights the loaded model must hold) for one of ComfyUI's layouts."""
    if layout == "bf16":
        file = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
        decoded = {k: v.float() for k, v in file.items()}
    elif layout == "fp8":  # plain float8_e4m3fn matrices, the rest bf16
        file = {k: v.to(FP8 if is_matrix(k, v) else torch.bfloat16) for k, v in tensors.items()}
        decoded = {k: v.float() for k, v in file.items()}
    elif layout == "fp8-scaled":
        file, decoded = scaled_fp8(tensors, ".scale_weight")
        file["scaled_fp8"] = torch.empty(0, dtype=FP8)
    else:  # "fp8-mixed": the newer per-layer format (weight_scale, input_scale, comfy_quant config)
        file, decoded = scaled_fp8(tensors, ".weight_scale")
        for name in [k for k in file if k.endswith(".weight_scale")]:
            layer = name.removesuffix(".weight_scale")
            file[f"{layer}.input_scale"] = torch.tensor(1.0)
            file[f"{layer}.comfy_quant"] = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()),
                                                        dtype=torch.uint8)
    return {f"model.diffusion_model.{k}": v for k, v in file.items()}, decoded


def stored_type(name: str, tensor: torch.Tensor, qtype):
    """The type `write_gguf` stores a tensor in: `qtype` (or, for a mix, what it gives for the name) for a matrix whose
    rows split into that type's blocks, else None (F32)."""
    import gguf

    kind = qtype(name) if callable(qtype) else qtype
    return kind if is_matrix(name, tensor) and tensor.shape[1] % gguf.GGML_QUANT_SIZES[kind][0] == 0 else None


def write_gguf(path, tensors: dict, qtype) -> dict:
    """The transformer as GGUF (gguf's own writer), each tensor in its `stored_type`, as the GGUF converters do.
    `qtype`: a GGMLQuantizationType, or a function of the tensor's name that gives one (a mixed file such as Q4_K_M).
    K-quants are encoded by tests/kquants.py (gguf's package cannot), the rest by gguf's own encoder. Returns what each
    tensor decodes to by gguf's reference decoder."""
    import gguf
    from gguf import GGMLQuantizationType, quants

    writer = gguf.GGUFWriter(str(path), "qwen_image")
    decoded = {}
    for name, tensor in tensors.items():
        array = tensor.float().numpy()
        kind = stored_type(name, tensor, qtype)
        if kind is not None:
            data = (kquants.quantize if kind in kquants.ENCODERS else quants.quantize)(array, kind)
            writer.add_tensor(name, data, raw_dtype=kind)
            decoded[name] = torch.from_numpy(quants.dequantize(data, kind).copy())
        else:
            writer.add_tensor(name, array, raw_dtype=GGMLQuantizationType.F32)
            decoded[name] = tensor.float()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return decoded


def q4_k_m(name: str):
    """A Q4_K_M-like mix: Q6_K for the value and MLP-output projections (llama.cpp's Q4_K_M gives some of those more
    bits), Q4_K elsewhere."""
    from gguf import GGMLQuantizationType

    more_bits = name.endswith(("attn.to_v.weight", "attn.add_v_proj.weight", "mlp.net.2.weight"))
    return GGMLQuantizationType.Q6_K if more_bits else GGMLQuantizationType.Q4_K


def loaded_weights(pipe, component: str) -> dict:
    module = getattr(pipe, component)
    if component == "transformer" and hasattr(module, "hf_quantizer"):
        from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

        return {k: dequantize_gguf_tensor(v).float() for k, v in module.state_dict().items()}
    return {k: v.float() for k, v in module.state_dict().items()}


def pixels(pipe) -> np.ndarray:
    return np.asarray(editforge.edit(pipe, noise_image(), "make it red", seed=0, steps=2), dtype=np.int16)


@pytest.fixture(scope="module")
def base_pixels():
    return pixels(editforge.load_pipeline(MODEL, device="cpu"))


@pytest.mark.parametrize("layout", ["bf16", "fp8", "fp8-scaled", "fp8-mixed"])
def test_comfyui_transformer_files_load_what_they_hold(tmp_path, originals, base_pixels, layout):
    file, decoded = comfyui_transformer(layout, originals["transformer"])
    path = tmp_path / f"qwen_image_edit_2509_{layout}.safetensors"
    save_file(file, str(path))
    pipe = editforge.load_pipeline(MODEL, device="cpu", transformer=str(path))
    weights = loaded_weights(pipe, "transformer")
    assert weights.keys() == originals["transformer"].keys()
    for name, original in originals["transformer"].items():
        assert torch.equal(weights[name], decoded[name]), name  # exactly what the format decodes to
        # ... which is the original within the format's rounding: 3 mantissa bits for fp8, 8 for bf16
        tolerance = 2 ** -8 if layout == "bf16" or not is_matrix(name, original) else 2 ** -4
        torch.testing.assert_close(weights[name], original.float(), rtol=tolerance, atol=original.abs().max() * tolerance)
    difference = np.abs(pixels(pipe) - base_pixels)
    assert difference.mean() < 2 and difference.max() <= 24, (difference.mean(), difference.max())


def test_a_bf16_file_makes_the_pictures_of_the_model_it_came_from_pixel_for_pixel(tmp_path, originals):
    path = tmp_path / "qwen_image_edit_2509_bf16.safetensors"
    save_file(comfyui_transformer("bf16", originals["transformer"])[0], str(path))
    ours = editforge.load_pipeline(MODEL, device="cpu", dtype="bf16", transformer=str(path))
    theirs = editforge.load_pipeline(MODEL, device="cpu", dtype="bf16")
    assert np.array_equal(pixels(ours), pixels(theirs))


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """The tiny Edit-2509 with a 256-wide transformer (16 heads of 16, MLP 1024): K-quants store rows in super-blocks
    of 256 values, and of the tiny transformer's 48-wide matrices only one has such rows. Returns (folder, its
    transformer's weights, its picture)."""
    import shutil

    from diffusers import QwenImageTransformer2DModel

    folder = tmp_path_factory.mktemp("wide") / "tiny-qwen-image-edit-2509-wide"
    shutil.copytree(tiny_model_dir(MODEL), folder)
    config = QwenImageTransformer2DModel.load_config(folder / "transformer")
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel.from_config({**config, "num_attention_heads": 16})
    shutil.rmtree(folder / "transformer")
    transformer.save_pretrained(folder / "transformer")
    weights = load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    return str(folder), weights, pixels(editforge.load_pipeline(str(folder), device="cpu"))


# file type: (transformer, the label of the file's precision, how many matrices it holds quantized, largest error
# against the original weights as a share of the tensor's largest value, mean pixel difference from the original's
# picture: measured 0.003, 0.06, 0.21, 0.36, 0.94, 0.94 levels of 255)
GGUF_CASES = {
    "Q8_0": ("tiny", "Q8_0", 5, 2 ** -7, 0.1),
    "Q4_0": ("tiny", "Q4_0", 5, 2 ** -3, 0.5),
    "Q6_K": ("wide", "Q6_K", 32, 2 ** -5, 0.5),
    "Q5_K": ("wide", "Q5_K", 32, 2 ** -4, 1),
    "Q4_K": ("wide", "Q4_K", 32, 2 ** -3, 2),
    "Q4_K_M": ("wide", "Q4_K", 32, 2 ** -3, 2),  # 24 matrices in Q4_K, 8 in Q6_K: named by the most common
}


@pytest.mark.parametrize("file_type", GGUF_CASES)
def test_gguf_transformer_loads_quantized_and_decodes_to_what_gguf_wrote(tmp_path, request, originals, base_pixels,
                                                                         file_type):
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFParameter

    transformer, label, count, error, pixel_error = GGUF_CASES[file_type]
    model, tensors, base = request.getfixturevalue("wide_model") if transformer == "wide" else \
        (MODEL, originals["transformer"], base_pixels)
    qtype = q4_k_m if file_type == "Q4_K_M" else gguf.GGMLQuantizationType[file_type]
    path = tmp_path / f"qwen-image-edit-2509-{file_type}.gguf"
    decoded = write_gguf(path, tensors, qtype)
    pipe = editforge.load_pipeline(model, device="cpu", transformer=str(path))
    # kept quantized in memory (decoded layer by layer as it runs): every matrix the file holds quantized, those whose
    # rows split into the type's blocks (32 values; 256 for the K-quants), in the type it was written in
    written = {n: kind for n, t in tensors.items() if (kind := stored_type(n, t, qtype)) is not None}
    assert {n: p.quant_type for n, p in pipe.transformer.named_parameters() if isinstance(p, GGUFParameter)} == written
    assert len(written) == count
    weights = loaded_weights(pipe, "transformer")
    for name, original in tensors.items():
        # diffusers decodes in fp16, gguf's reference decoder in fp32: a Q-block value is one product (scale times
        # integer) rounded to fp16; a K-quant value the difference of two (and their scales' product), each rounded:
        # 2^-11 of terms up to twice the tensor's largest value
        atol = decoded[name].abs().max() * 2 ** -8 if transformer == "wide" else 1e-7
        torch.testing.assert_close(weights[name], decoded[name], rtol=2 ** -10, atol=atol)
        torch.testing.assert_close(weights[name], original.float(), rtol=0, atol=original.abs().max() * error)
    difference = np.abs(pixels(pipe) - base)
    assert difference.mean() < pixel_error, difference.mean()
    image, params = editforge.generate(pipe, [noise_image()], "make it red", seed=0, steps=2)
    assert params["files"] == {"transformer": f"{path.name} (gguf {label})"}


def test_gguf_with_a_lora_to_fuse_is_dequantized_first(tmp_path, originals):
    """Fusing into quantized blocks is impossible; a GGUF base with a LoRA (or Lightning) is decoded to `dtype`."""
    from diffusers.quantizers.gguf.utils import GGUFParameter
    from gguf import GGMLQuantizationType

    path = tmp_path / "q8.gguf"
    decoded = write_gguf(path, originals["transformer"], GGMLQuantizationType.Q8_0)
    pipe = editforge.load_pipeline(MODEL, device="cpu", transformer=str(path), lightning=8)
    assert not any(isinstance(p, GGUFParameter) for p in pipe.transformer.parameters())
    name = "transformer_blocks.0.img_mlp.net.2.weight"  # no Lightning layer: the decoded GGUF weight as it is
    torch.testing.assert_close(pipe.transformer.state_dict()[name], decoded[name], rtol=2 ** -10, atol=1e-7)


def saved_weights(folder: Path, component: str) -> dict:
    """A saved pipeline folder's `component` weights, as plain diffusers loads them."""
    import diffusers

    from editforge.models.text_encoder import allow_processor_without_video

    allow_processor_without_video()  # only because this machine has no torchvision
    return {k: v.float() for k, v in getattr(diffusers.DiffusionPipeline.from_pretrained(folder), component)
            .state_dict().items()}


def test_fuse_takes_the_single_files(cli, tmp_path, originals, vae_original):
    """`editforge fuse --transformer --text-encoder --vae`: a ComfyUI user's files, with a LoRA fused in, saved as a
    folder plain diffusers loads. A bf16 transformer file gives exactly the weights of fusing into the folder's model
    at bf16."""
    lora = tmp_path / "style.safetensors"
    write_lora(lora, "kohya")
    transformer = tmp_path / "qwen_image_edit_2509_bf16.safetensors"
    save_file(comfyui_transformer("bf16", originals["transformer"])[0], str(transformer))
    legacy = {k: v for k, v in originals["text_encoder"].items() if k != "lm_head.weight"}
    file, decoded = scaled_fp8(legacy, ".scale_weight")
    text_encoder = tmp_path / "qwen_2.5_vl_7b_fp8_scaled.safetensors"
    save_file(file, str(text_encoder))
    vae = tmp_path / "qwen_image_vae.safetensors"
    changed = {**vae_original, "post_quant_conv.weight": vae_original["post_quant_conv.weight"] * 2}  # not the folder's
    save_file(comfyui_vae(changed), str(vae))
    fused = {}
    for name, files in {"files": ("--transformer", transformer, "--text-encoder", text_encoder, "--vae", vae),
                        "folder": ()}.items():
        code, out, err = cli("fuse", "--model", MODEL, "--lora", f"{lora}:0.7", "--dtype", "bf16", *files,
                             "--out", tmp_path / name)
        assert code == 0, err
        fused[name] = saved_weights(tmp_path / name, "transformer")
    assert fused["files"].keys() == fused["folder"].keys()
    for name, weight in fused["folder"].items():
        assert torch.equal(fused["files"][name], weight), name
    lora_layer = "transformer_blocks.0.attn.to_q.weight"  # the LoRA is in: not the file's weight
    assert not torch.equal(fused["files"][lora_layer], originals["transformer"][lora_layer].to(torch.bfloat16).float())
    # the text encoder is the file's (the fp8 values times their scales, at bf16), not the folder's
    text = saved_weights(tmp_path / "files", "text_encoder")
    name = "model.language_model.layers.0.mlp.up_proj.weight"
    assert torch.equal(text[name], decoded["model.layers.0.mlp.up_proj.weight"].to(torch.bfloat16).float())
    assert torch.equal(saved_weights(tmp_path / "files", "vae")["post_quant_conv.weight"],
                       changed["post_quant_conv.weight"].to(torch.bfloat16).float())
    meta = json.loads((tmp_path / "files" / "editforge.json").read_text())
    assert meta["files"] == {"transformer": f"{transformer.name} (bf16)",
                             "text_encoder": f"{text_encoder.name} (fp8-scaled)", "vae": f"{vae.name} (fp32)"}


def test_fuse_decodes_a_gguf_transformer_first(cli, tmp_path, originals):
    """A GGUF base is decoded before Lightning is fused into it: the saved folder holds plain weights, the decoded GGUF
    plus the Lightning change that fusing into the folder's own model makes (to the fp16 rounding of decoding)."""
    from gguf import GGMLQuantizationType

    from editforge.models.fuse import fuse_to_folder

    path = tmp_path / "qwen-image-edit-2509-Q4_0.gguf"
    decoded = write_gguf(path, originals["transformer"], GGMLQuantizationType.Q4_0)
    code, _, err = cli("fuse", "--model", MODEL, "--lightning", "8", "--transformer", path, "--out", tmp_path / "gguf")
    assert code == 0, err
    fuse_to_folder(MODEL, tmp_path / "folder", lightning=8)
    from_gguf, from_folder = (saved_weights(tmp_path / name, "transformer") for name in ("gguf", "folder"))
    changed = 0
    for name, original in originals["transformer"].items():
        lightning = from_folder[name] - original
        # diffusers decodes the GGUF blocks in fp16 (2^-11 of the weight), the fusing adds in fp32
        torch.testing.assert_close(from_gguf[name] - lightning, decoded[name], rtol=2 ** -10, atol=1e-6)
        changed += bool(lightning.abs().max() > 1e-3)
    assert changed >= 12  # Lightning's layers (16 measured): its change is there, on top of the GGUF's weights
    assert any(not torch.equal(decoded[name], original) for name, original in originals["transformer"].items())


def test_comfyui_text_encoder_file(tmp_path, originals, base_pixels):
    """ComfyUI stores Qwen2.5-VL under transformers 4.x names (`model.layers`, `visual.`; transformers 5 nests both
    under `model.`), often without lm_head, here in scaled fp8."""
    legacy = {k: v for k, v in originals["text_encoder"].items() if k != "lm_head.weight"}
    assert "model.layers.0.mlp.up_proj.weight" in legacy and "visual.blocks.0.mlp.up_proj.weight" in legacy
    file, decoded = scaled_fp8(legacy, ".scale_weight")
    path = tmp_path / "qwen_2.5_vl_7b_fp8_scaled.safetensors"
    save_file(file, str(path))
    pipe = editforge.load_pipeline(MODEL, device="cpu", text_encoder=str(path))
    # recorded, and part of the training cache's key: its embeddings are not the folder's model's
    assert model_info(pipe).files == {"text_encoder": "qwen_2.5_vl_7b_fp8_scaled.safetensors (fp8-scaled)"}
    base = editforge.load_pipeline(MODEL, device="cpu")
    assert settings_fingerprint(pipe, 4096, 3136) != settings_fingerprint(base, 4096, 3136)
    weights = loaded_weights(pipe, "text_encoder")
    for old in legacy:
        new = "model.visual." + old.removeprefix("visual.") if old.startswith("visual.") else \
            "model.language_model." + old.removeprefix("model.")
        assert torch.equal(weights[new], decoded[old]), new
    difference = np.abs(pixels(pipe) - base_pixels)
    assert difference.mean() < 2, difference.mean()


def test_wrong_files_are_one_line_before_anything_loads(tmp_path, originals, unloadable):
    """`unloadable` has a garbage transformer: an error about the file, not the folder, proves the order."""
    model = unloadable(MODEL)
    dropped = [k for k in originals["transformer"] if k.startswith("transformer_blocks.1.attn.")]
    cases = {
        tmp_path / "missing.safetensors": "`transformer` file not found",
        tmp_path: "is a folder; give the single .safetensors or .gguf file",
        tmp_path / "model.ckpt": "expected a .safetensors or .gguf file",
        tmp_path / "truncated.safetensors": "is not a readable safetensors file",
        tmp_path / "short.safetensors": rf"{len(dropped)} of the model's {len(originals['transformer'])} weights are "
                                        r"missing \(e\.g\. transformer_blocks\.1\.attn\.",
        tmp_path / "lora.safetensors": "weights are not the model's",
    }
    (tmp_path / "model.ckpt").write_bytes(b"x")
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    save_file({k: v for k, v in originals["transformer"].items() if k not in dropped}, str(tmp_path / "short.safetensors"))
    save_file({**originals["transformer"], "transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 48)},
              str(tmp_path / "lora.safetensors"))
    for path, message in cases.items():
        with pytest.raises(EditForgeError, match=message):
            editforge.load_pipeline(model, device="cpu", transformer=str(path))
    # a GGUF type diffusers does not decode (IQ2_XXS), beside a well-formed one: refused from the header
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "iq2.gguf"), "qwen_image")
    for name, tensor in originals["transformer"].items():
        if name == "time_text_embed.timestep_embedder.linear_1.weight":  # rows of one 256-value block, 66 bytes
            writer.add_tensor(name, np.zeros((48, 66), np.uint8), raw_dtype=gguf.GGMLQuantizationType.IQ2_XXS)
        else:
            writer.add_tensor(name, tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(EditForgeError, match=r"iq2.gguf: 1 tensor in IQ2_XXS \(e\.g\. time_text_embed\.timestep_"
                                             r"embedder\.linear_1\.weight\), a GGUF type diffusers does not decode "
                                             r"\(it reads .*Q4_K.*\)"):
        editforge.load_pipeline(model, device="cpu", transformer=str(tmp_path / "iq2.gguf"))
    (tmp_path / "te.gguf").write_bytes(b"GGUF")
    with pytest.raises(EditForgeError, match="GGUF is read for the transformer only"):
        editforge.load_pipeline(model, device="cpu", text_encoder=str(tmp_path / "te.gguf"))


def test_cli_names_the_flag(cli, tmp_path, make_image):
    code, _, err = cli("edit", "--model", MODEL, "--image", str(make_image()), "--prompt", "p", "--out", "o.png",
                       "--transformer", "nope.safetensors")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--transformer file not found: nope.safetensors" in err, err


def training_config(tmp_path, name: str, **model) -> dict:
    samples = write_samples(tmp_path / "data")
    return {"model": {"name": MODEL, **model} if model else MODEL, "output_dir": str(tmp_path / name), "seed": 0,
            "data": {"samples": samples, "max_pixels": 64 * 64, "condition_pixels": 56 * 56,
                     "cache_dir": str(tmp_path / f"cache-{name}")},
            "lora": {"rank": 4, "alpha": 4},
            "train": {"steps": 3, "learning_rate": 1e-3, "mixed_precision": "no", "gradient_checkpointing": False},
            "checkpoint": {"every": 100}}


def test_training_on_a_single_file_transformer_is_training_on_its_weights(tmp_path, originals, monkeypatch, caplog):
    """`model.transformer` (here an fp32 ComfyUI-layout file: the same weights as the folder's) gives the losses of the
    folder's model; a GGUF base stays quantized and its LoRA learns (every LoRA parameter gets a gradient)."""
    from gguf import GGMLQuantizationType

    fp32 = tmp_path / "qwen_image_edit_2509_fp32.safetensors"
    save_file({f"model.diffusion_model.{k}": v.float() for k, v in originals["transformer"].items()}, str(fp32))
    base = train(validate(training_config(tmp_path, "base"))).losses
    from_file = train(validate(training_config(tmp_path, "file", transformer=str(fp32)))).losses
    assert from_file == base and len(set(base)) == 3

    gguf_path = tmp_path / "q4.gguf"
    write_gguf(gguf_path, originals["transformer"], GGMLQuantizationType.Q4_0)
    raw = training_config(tmp_path, "gguf", transformer=str(gguf_path))
    import editforge.train.loop as loop
    import editforge.train.step as step
    from diffusers.quantizers.gguf.utils import GGUFParameter

    quantized = []

    def prepare_model(pipe, *args, **kwargs):
        quantized.extend(n for n, p in pipe.transformer.named_parameters() if isinstance(p, GGUFParameter))
        return step.prepare_model(pipe, *args, **kwargs)

    monkeypatch.setattr(loop, "prepare_model", prepare_model)
    with caplog.at_level("WARNING", logger="editforge.train"):
        result = train(validate(raw))
    assert len(quantized) == 5  # the base trains quantized, as GGUF inference runs it
    assert all(np.isfinite(result.losses)) and result.losses != base  # other (Q4-rounded) weights
    assert not [r for r in caplog.records if "gradient of exactly 0" in r.getMessage()]  # every LoRA weight learns


def test_training_config_names_a_missing_model_file(tmp_path, originals):
    from gguf import GGMLQuantizationType

    raw = training_config(tmp_path, "x", transformer=str(tmp_path / "nope.safetensors"))
    with pytest.raises(EditForgeError, match=r"model.transformer: not found: .*nope.safetensors"):
        train(validate(raw))
    gguf_path = tmp_path / "q8.gguf"
    write_gguf(gguf_path, originals["transformer"], GGMLQuantizationType.Q8_0)
    raw = training_config(tmp_path, "z", transformer=str(gguf_path))
    raw["train"]["quantize"] = "int8"
    with pytest.raises(EditForgeError, match="train.quantize: the GGUF transformer is quantized already"):
        train(validate(raw))
    raw["train"].update(quantize=None, blocks_to_swap=1, gradient_checkpointing=True)
    with pytest.raises(EditForgeError, match="train.blocks_to_swap: the blocks of a GGUF transformer"):
        train(validate(raw))
    with pytest.raises(EditForgeError, match="`blocks_to_swap` swaps plain, int8 and fp8 weights, not GGUF ones"):
        editforge.load_pipeline(MODEL, device="cpu", transformer=str(gguf_path), blocks_to_swap=1)
    # `model: NAME` and `--set model.transformer=...` together: the short form becomes the section
    raw = training_config(tmp_path, "y")
    apply_override(raw, "model.text_encoder=te.safetensors")
    assert validate(raw).model.text_encoder == Path("te.safetensors") and validate(raw).model.name == MODEL


# ComfyUI's Qwen-Image VAE (`qwen_image_vae.safetensors`) is the Wan 2.1 VAE as ComfyUI's `comfy/ldm/wan/vae.py` builds
# it, every block a plain `nn.Sequential` index; written here from those module definitions, not from the loader.
COMFYUI_VAE_TOP = {"quant_conv.": "conv1.", "post_quant_conv.": "conv2.",  # WanVAE.conv1 / conv2
                   # Encoder3d / Decoder3d: conv1, then head = (RMS_norm, SiLU, CausalConv3d)
                   "conv_in.": "conv1.", "norm_out.": "head.0.", "conv_out.": "head.2."}
COMFYUI_RESIDUAL = {"norm1.": "residual.0.", "conv1.": "residual.2.", "norm2.": "residual.3.", "conv2.": "residual.6.",
                    "conv_shortcut.": "shortcut."}  # ResidualBlock.residual = (RMS_norm, SiLU, conv, RMS_norm, SiLU,
#                                                    Dropout, conv); its shortcut a 1x1x1 conv where the width changes


def comfyui_vae_name(name: str, num_res_blocks: int) -> str:
    """The ComfyUI name of an `AutoencoderKLQwenImage` weight."""
    coder, rest = name.split(".", 1) if name.startswith(("encoder.", "decoder.")) else ("", name)
    prefix = f"{coder}." if coder else ""
    top = next((p for p in COMFYUI_VAE_TOP if rest.startswith(p)), None)
    if top:
        return prefix + COMFYUI_VAE_TOP[top] + rest.removeprefix(top)
    blocks, i, *inner = rest.split(".")
    if blocks == "mid_block":  # middle = (ResidualBlock, AttentionBlock, ResidualBlock)
        kind, index, *inner = [i, *inner]
        block = "middle.1" if kind == "attentions" else f"middle.{2 * int(index)}"
    elif blocks == "down_blocks":  # downsamples: per stage num_res_blocks ResidualBlocks, then a Resample
        block = f"downsamples.{i}"
    else:  # upsamples: per stage num_res_blocks + 1 ResidualBlocks, then a Resample (none after the last stage)
        kind, index, *inner = inner
        position = num_res_blocks + 1 if kind == "upsamplers" else int(index)
        block = f"upsamples.{int(i) * (num_res_blocks + 2) + position}"
    tail = ".".join(inner)
    if block.startswith(("downsamples", "upsamples", "middle.0", "middle.2")):
        residual = next((p for p in COMFYUI_RESIDUAL if tail.startswith(p)), None)
        if residual:  # (a Resample's `resample.1` and `time_conv` are named as diffusers names them)
            tail = COMFYUI_RESIDUAL[residual] + tail.removeprefix(residual)
    return f"{prefix}{block}.{tail}"


@pytest.fixture(scope="module")
def vae_original():
    return load_file(str(tiny_model_dir(MODEL) / "vae" / "diffusion_pytorch_model.safetensors"))


def comfyui_vae(tensors: dict, num_res_blocks: int = 1) -> dict:
    """A VAE's weights (the tiny one has 1 residual block per stage; the real one 2) as ComfyUI stores them."""
    file = {comfyui_vae_name(k, num_res_blocks): v for k, v in tensors.items()}
    assert len(file) == len(tensors)
    return file


# Names and shapes of the real file (the Wan 2.1 VAE layout qwen_image_vae.safetensors has), as ComfyUI users list them
REAL_VAE_TENSORS = {"conv2.weight": (16, 16, 1, 1, 1), "decoder.conv1.weight": (384, 16, 3, 3, 3),
                    "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),
                    "decoder.upsamples.4.shortcut.weight": (384, 192, 1, 1, 1),
                    "decoder.upsamples.4.residual.2.weight": (384, 192, 3, 3, 3),
                    "decoder.upsamples.7.time_conv.weight": (768, 384, 3, 1, 1),
                    "decoder.upsamples.14.residual.6.weight": (96, 96, 3, 3, 3),
                    "decoder.head.2.weight": (3, 96, 3, 3, 3), "encoder.downsamples.5.time_conv.weight": (192, 192, 3, 1, 1)}


def test_the_real_comfyui_vae_layout_maps_onto_the_full_size_model(tmp_path):
    """At full size (2 residual blocks per stage, as in every qwen_image_vae.safetensors), each ComfyUI name maps onto
    the diffusers weight of its shape, and a header-only file with the real names passes the check."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLQwenImage

    with init_empty_weights(include_buffers=False):
        model = AutoencoderKLQwenImage(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                       temperal_downsample=[False, True, True])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    comfyui = {comfyui_vae_name(k, 2): k for k in shapes}
    assert len(comfyui) == len(shapes) == 194
    for name, shape in REAL_VAE_TENSORS.items():
        assert shapes[comfyui[name]] == shape, name
    assert single_file.convert_keys("vae", comfyui) == comfyui
    model.save_config(tmp_path / "full" / "vae")
    path = tmp_path / "qwen_image_vae.safetensors"
    save_file({name: torch.empty(0, dtype=torch.bfloat16) for name in comfyui}, str(path))  # names only
    assert single_file.inspect("vae", path, tmp_path / "full").label == "qwen_image_vae.safetensors (bf16)"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_comfyui_vae_file_loads_its_weights_exactly_and_makes_the_folder_models_pictures(tmp_path, vae_original, dtype):
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    path = tmp_path / "qwen_image_vae.safetensors"
    save_file({k: v.to(torch_dtype) for k, v in comfyui_vae(vae_original).items()}, str(path))
    pipe = editforge.load_pipeline(MODEL, device="cpu", dtype=dtype, vae=str(path))
    weights = pipe.vae.state_dict()
    assert weights.keys() == vae_original.keys()
    for name, original in vae_original.items():
        assert weights[name].dtype == torch_dtype and torch.equal(weights[name], original.to(torch_dtype)), name
    folder = editforge.load_pipeline(MODEL, device="cpu", dtype=dtype)
    assert np.array_equal(pixels(pipe), pixels(folder))  # the VAE encodes the input and decodes the output
    _, params = editforge.generate(pipe, [noise_image()], "make it red", seed=0, steps=2)
    assert params["files"] == {"vae": f"qwen_image_vae.safetensors ({dtype})"}  # recorded in every PNG


def test_a_diffusers_layout_vae_file_loads_as_it_is(tmp_path, vae_original):
    """The folder's own `vae/diffusion_pytorch_model.safetensors` (diffusers names) is a single file too."""
    pipe = editforge.load_pipeline(MODEL, device="cpu", vae=str(tiny_model_dir(MODEL) / "vae" /
                                                                "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(pipe.vae.state_dict()[k], v) for k, v in vae_original.items())


def test_a_wrong_vae_file_is_one_line_before_anything_loads(tmp_path, originals, vae_original, unloadable):
    model = unloadable(MODEL)  # its transformer is garbage: an error about the VAE file proves the order
    transformer = tmp_path / "qwen_image_edit_2509_bf16.safetensors"
    save_file(comfyui_transformer("bf16", originals["transformer"])[0], str(transformer))
    with pytest.raises(EditForgeError, match=rf"`vae` {transformer}: {len(vae_original)} of the model's "
                                             rf"{len(vae_original)} weights are missing .* is it a VAE of the model"):
        editforge.load_pipeline(model, device="cpu", vae=str(transformer))
    # nor does a VAE of another depth: the real one's 2 residual blocks per stage, for this 1-block model
    from diffusers import AutoencoderKLQwenImage

    deeper = AutoencoderKLQwenImage.from_config({**AutoencoderKLQwenImage.load_config(tiny_model_dir(MODEL) / "vae"),
                                                 "num_res_blocks": 2})
    path = tmp_path / "deeper.safetensors"
    save_file(comfyui_vae(deeper.state_dict(), num_res_blocks=2), str(path))
    with pytest.raises(EditForgeError, match=r"`vae` .*deeper.safetensors: \d+ of the model's \d+ weights are missing"):
        editforge.load_pipeline(model, device="cpu", vae=str(path))


def test_cli_vae_flag(cli, tmp_path, make_image, originals, vae_original):
    for command in ("edit", "t2i"):
        code, out, _ = cli(command, "--help")
        assert code == 0 and "--vae " in out, out
    path = tmp_path / "qwen_image_vae.safetensors"
    save_file(comfyui_vae(vae_original), str(path))
    code, _, err = cli("edit", "--model", MODEL, "--image", str(make_image()), "--prompt", "p", "--out", "o.png",
                       "--steps", "2", "--device", "cpu", "--vae", str(path))
    assert code == 0, err
    assert read_params(tmp_path / "o.png")["files"] == {"vae": "qwen_image_vae.safetensors (fp32)"}
    wrong = tmp_path / "qwen_image_edit_2509_bf16.safetensors"  # the transformer's file given as the VAE
    save_file(comfyui_transformer("bf16", originals["transformer"])[0], str(wrong))
    code, _, err = cli("edit", "--model", MODEL, "--image", str(make_image()), "--prompt", "p", "--out", "x.png",
                       "--vae", str(wrong))
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"--vae {wrong}: 146 of the model's 146 weights are " \
        "missing" in err, err
    assert not (tmp_path / "x.png").exists()


def test_training_encodes_with_the_vae_file(tmp_path, vae_original):
    """`model.vae` is the VAE training caches latents with: the folder's weights in ComfyUI's layout train as the
    folder's model does, other weights otherwise; and the file is part of the cache's key (the two file runs share a
    cache folder, and the VAE's config is the same for both: only the file tells their latents apart)."""
    same, other = tmp_path / "qwen_image_vae.safetensors", tmp_path / "qwen_image_vae_finetuned.safetensors"
    save_file(comfyui_vae(vae_original), str(same))
    save_file(comfyui_vae({k: v * 1.5 if k == "encoder.conv_in.weight" else v for k, v in vae_original.items()}),
              str(other))
    base = train(validate(training_config(tmp_path, "base"))).losses
    losses = {}
    for path in (same, other):
        raw = training_config(tmp_path, path.stem, vae=str(path))
        raw["data"]["cache_dir"] = str(tmp_path / "shared-cache")
        losses[path] = train(validate(raw)).losses
    assert losses[same] == base and np.all(np.isfinite(losses[other])) and losses[other] != base
    raw = training_config(tmp_path, "missing", vae=str(tmp_path / "nope.safetensors"))
    with pytest.raises(EditForgeError, match=r"model.vae: not found: .*nope.safetensors"):
        train(validate(raw))
