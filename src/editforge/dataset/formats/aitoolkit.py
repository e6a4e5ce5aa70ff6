"""ai-toolkit (ostris): a target folder with `.txt` captions, control folders, a job config YAML.

Rules, from ai-toolkit `config/examples/train_lora_qwen_image_edit{,_2509}_32gb.yaml` and
`toolkit/dataloader_mixins.py`:
- `folder_path` holds the targets, captions beside them with `caption_ext: "txt"`;
- `control_path` is one folder (Edit) or a list of up to three (EditPlus); the model's `arch` is the
  family's (`Family.aitoolkit_arch`: `qwen_image_edit`, `qwen_image_edit_plus`, `qwen_image_edit_plus_2511`);
  a control is the file in that folder with the target's stem and one of `.jpg .jpeg .png .webp`, and a
  folder without one just gives that sample one control fewer.
The YAML is a starting point to edit (steps, rank, quantization), not a tuned recipe.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from editforge.dataset.formats.folders import control_slots, write_folders
from editforge.dataset.layout import ExportPlan
from editforge.dataset.sample import Sample
from editforge.models.registry import Family

CONFIG = "aitoolkit_config.yaml"


def write(samples: list[Sample], out_dir: Path, family: Family) -> ExportPlan:
    plan = write_folders(samples, same_suffix=False)
    controls = [str(out_dir / f"control_{k}") for k in range(1, control_slots(samples) + 1)]
    plan.texts[CONFIG] = yaml.safe_dump(job_config(out_dir, controls, family), sort_keys=False, allow_unicode=True)
    return plan


def job_config(out_dir: Path, controls: list[str], family: Family) -> dict:
    dataset = {
        "folder_path": str(out_dir / "target"),
        "control_path": controls if family.max_images > 1 else controls[0],
        "caption_ext": "txt",
        "caption_dropout_rate": 0.0,  # an edit instruction is the whole point of the sample
        "resolution": [512, 768, 1024],
    }
    return {
        "job": "extension",
        "config": {
            "name": f"editforge_{out_dir.name}",
            "process": [{
                "type": "diffusion_trainer",
                "training_folder": str(out_dir / "output"),
                "device": "cuda:0",
                "network": {"type": "lora", "linear": 16, "linear_alpha": 16},
                "save": {"dtype": "float16", "save_every": 250, "max_step_saves_to_keep": 4},
                "datasets": [dataset],
                "train": {
                    "batch_size": 1, "steps": 3000, "gradient_accumulation": 1, "train_unet": True,
                    "train_text_encoder": False, "gradient_checkpointing": True,
                    "noise_scheduler": "flowmatch", "timestep_type": "weighted", "optimizer": "adamw8bit",
                    "lr": 1e-4, "dtype": "bf16", "cache_text_embeddings": True,
                },
                "model": {"name_or_path": family.hub_id, "arch": family.aitoolkit_arch, "quantize": True,
                          "quantize_te": True, "low_vram": True},
            }],
        },
        "meta": {"name": "[name]", "version": "1.0"},
    }
