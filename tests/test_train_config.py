"""The training config: defaults per family, --set overrides, errors that name the bad key, the shipped examples."""

from pathlib import Path

import pytest
import yaml

from editforge.errors import EditForgeError
from editforge.models.registry import FAMILIES
from editforge.train.config import DEFAULT_TARGET_MODULES, default_config, load_config, validate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write(tmp_path, data) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal():
    return {"model": "tiny-qwen-image-edit-2509", "output_dir": "out",
            "data": {"samples": [{"target": "t.png", "controls": ["c.png"], "instruction": "x"}]}}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_print_config_is_complete_and_valid(family):
    config = validate(default_config(family))
    assert config.model.name == family
    assert config.lora.target_modules == DEFAULT_TARGET_MODULES
    assert bool(config.validation.samples[0].controls) == FAMILIES[family].is_edit


def test_unknown_key_is_named(tmp_path):
    data = minimal()
    data["train"] = {"learning_rte": 1e-4}
    with pytest.raises(EditForgeError, match=r"train\.learning_rte: unknown key"):
        load_config(write(tmp_path, data))


def test_bad_value_is_named(tmp_path):
    data = minimal()
    data["lora"] = {"rank": 0}
    data["train"] = {"optimizer": "sgd"}
    with pytest.raises(EditForgeError) as err:
        load_config(write(tmp_path, data))
    assert "lora.rank:" in str(err.value) and "train.optimizer:" in str(err.value)


def test_overrides_parse_yaml_values_and_reach_nested_keys(tmp_path):
    config = load_config(write(tmp_path, minimal()), [
        "train.steps=7", "train.learning_rate=2e-4", "lora.target_modules=[to_q, to_k]", "train.quantize=int8",
        "checkpoint.every=3", "train.shift=2.5",
    ])
    assert (config.train.steps, config.train.learning_rate, config.train.quantize) == (7, 2e-4, "int8")
    assert config.lora.target_modules == ["to_q", "to_k"] and config.checkpoint.every == 3
    assert config.train.shift == 2.5


def test_bad_overrides_are_named(tmp_path):
    path = write(tmp_path, minimal())
    with pytest.raises(EditForgeError, match="expected key=value"):
        load_config(path, ["train.steps"])
    with pytest.raises(EditForgeError, match=r"train\.stepz: unknown key"):
        load_config(path, ["train.stepz=3"])
    with pytest.raises(EditForgeError, match=r"train\.shift"):
        load_config(path, ["train.shift=-1"])


def test_needs_data_and_too_many_controls_is_an_error(tmp_path):
    data = minimal()
    data["data"] = {}
    with pytest.raises(EditForgeError, match="data.source"):
        load_config(write(tmp_path, data))
    data = minimal()
    data["data"]["samples"][0]["controls"] = ["a", "b", "c", "d"]
    with pytest.raises(EditForgeError, match=r"data\.samples\.0\.controls"):
        load_config(write(tmp_path, data))


@pytest.mark.parametrize("name", ["train-qwen-image.yaml", "train-qwen-image-edit.yaml",
                                  "train-qwen-image-edit-2509.yaml"])
def test_examples_validate_and_their_files_exist(name):
    config = load_config(EXAMPLES / name)
    assert config.model.name.startswith("tiny-")
    root = EXAMPLES.parent
    for sample in [*config.data.samples, *config.validation.samples]:
        for path in [sample.target, *sample.controls]:
            assert path is None or (root / path).is_file(), path


def test_cli_print_config_and_missing_file():
    from typer.testing import CliRunner

    from editforge.cli import app

    result = CliRunner().invoke(app, ["train", "--print-config", "--family", "qwen-image"])
    assert result.exit_code == 0
    assert validate(yaml.safe_load(result.output)).model.name == "qwen-image"
    result = CliRunner().invoke(app, ["train", "nope.yaml"])
    assert "config file not found" in str(result.exception)


def test_training_samples_come_from_any_dataset_source_plus_inline(tmp_path, make_image):
    from editforge.dataset import Sample, export_dataset
    from editforge.models.registry import FAMILIES
    from editforge.train.loop import training_samples

    samples = [Sample(key=str(i), target=make_image(f"t{i}.png", seed=i),
                      controls=tuple(make_image(f"c{i}-{j}.png", seed=10 * i + j) for j in range(i + 1)),
                      instruction=f"edit {i}") for i in range(3)]
    export_dataset(samples, "diffsynth", tmp_path / "exported", model_family="qwen-image-edit-2509")
    raw = minimal()
    raw["data"]["source"] = str(tmp_path / "exported")
    raw["data"]["samples"][0].pop("controls")  # a text-to-image sample is fine in an edit set
    got, unfit = training_samples(validate(raw), FAMILIES["qwen-image-edit-2509"])
    assert [len(s.controls) for s in got] == [0, 1, 2, 3] and unfit == []
    assert sorted(s.instruction for s in got[1:]) == ["edit 0", "edit 1", "edit 2"]
    got, unfit = training_samples(validate(raw), FAMILIES["qwen-image-edit"])  # v1 takes exactly one control
    assert [len(s.controls) for s in got] == [1] and len(unfit) == 3
    assert [u.split(": ", 1)[1] for u in unfit] == [
        f"{n} control images; qwen-image-edit trains on samples with one control image" for n in (0, 2, 3)]


def test_mixed_precision_no_as_yaml_reads_it(tmp_path):
    """YAML reads an unquoted `no` as false: `--set train.mixed_precision=no` and `mixed_precision: no` both mean no."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal()) + "train:\n  mixed_precision: no\n")
    assert load_config(path).train.mixed_precision == "no"
    assert load_config(write(tmp_path, minimal()), ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(EditForgeError, match=r"train\.mixed_precision"):
        load_config(write(tmp_path, minimal()), ["train.mixed_precision=yes"])


def _paths_config(tmp_path, make_image, model: str) -> dict:
    target, control = make_image("t.png"), make_image("c.png", seed=1)
    return {"model": model, "output_dir": str(tmp_path / "out"), "train": {"steps": 1, "mixed_precision": "no"},
            "data": {"samples": [{"target": str(target), "controls": [str(control)], "instruction": "x"}],
                     "max_pixels": 64 * 64}}


@pytest.mark.parametrize("change, message", [
    (lambda raw, d: raw["data"].update(source="data/metadata.csv"), "data.source: not found: {d}/data/metadata.csv"),
    (lambda raw, d: raw["data"]["samples"][0].update(target="gone.png"), r"data.samples[0].target: not found: {d}/gone.png"),
    (lambda raw, d: raw.update(validation={"samples": [{"target": "data/edited/0001.png", "instruction": "x",
                                                        "controls": [str(d / "c.png")]}]}),
     "validation.samples[0].target: not found: {d}/data/edited/0001.png"),
    (lambda raw, d: raw["lora"].update(init_from=str(d / "old.safetensors")) if "lora" in raw
     else raw.update(lora={"init_from": str(d / "old.safetensors")}), "lora.init_from: not found: {d}/old.safetensors"),
    (lambda raw, d: (d / "file").write_text("x") and raw.update(output_dir=str(d / "file")),
     "output_dir: {d}/file is a file"),
    (lambda raw, d: raw.update(validation={"samples": [{"instruction": "x"}]}),
     "validation.samples[0]: qwen-image-edit-2509 previews need 1 to 3 control images, this one has 0"),
])
def test_paths_and_previews_are_checked_before_the_model_loads(tmp_path, make_image, unloadable, monkeypatch,
                                                                 change, message):
    from editforge.train import train

    monkeypatch.chdir(tmp_path)
    raw = _paths_config(tmp_path, make_image, unloadable("tiny-qwen-image-edit-2509"))
    change(raw, tmp_path)
    with pytest.raises(EditForgeError) as error:
        train(validate(raw))
    assert message.format(d=tmp_path) in str(error.value)
    assert not (tmp_path / "out").exists()


def test_the_print_config_placeholders_stop_before_anything_loads(tmp_path, unloadable, cli):
    """`--print-config > run.yaml` and a run without editing it: the placeholder dataset is named, with its path."""
    code, printed, _ = cli("train", "--print-config")
    assert code == 0
    (tmp_path / "run.yaml").write_text(printed)
    code, _, err = cli("train", "run.yaml", "--set",
                              f"model={unloadable('tiny-qwen-image-edit-2509')}", "--set", "train.mixed_precision=no")
    assert code == 2 and "Traceback" not in err, err
    assert f"data.source: not found: {tmp_path}/data/metadata.csv" in err
