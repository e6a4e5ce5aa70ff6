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
    assert config.model == family
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
    assert config.model.startswith("tiny-")
    root = EXAMPLES.parent
    for sample in [*config.data.samples, *config.validation.samples]:
        for path in [sample.target, *sample.controls]:
            assert path is None or (root / path).is_file(), path


def test_cli_print_config_and_missing_file():
    from typer.testing import CliRunner

    from editforge.cli import app

    result = CliRunner().invoke(app, ["train", "--print-config", "--family", "qwen-image"])
    assert result.exit_code == 0
    assert validate(yaml.safe_load(result.output)).model == "qwen-image"
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
