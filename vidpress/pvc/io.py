"""Save and load the PVC add-on alone: ``pvc.safetensors`` (its weights) and ``pvc_config.json`` in a folder.

The base model's weights are not saved: the add-on is loaded onto the stock pretrained model. When the add-on
holds a trained copy of the model's projector (the tower's merger on Qwen-VL; see ``trainable_parameters``), its weights are saved
under ``merger.`` and ``load_pvc`` restores them into a copy of the model's projector.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from vidpress.pvc.attach import vision_seams
from vidpress.pvc.model import PVC, PVCConfig

WEIGHTS = "pvc.safetensors"
CONFIG = "pvc_config.json"


def save_pvc(pvc: PVC, path: str | Path) -> Path:
    """Write the add-on's weights and config into the folder ``path`` (created if needed); returns it."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in pvc.state_dict().items()}
    save_file(state, folder / WEIGHTS)
    config = pvc.config.to_dict() | {"merger": pvc.merger is not None}
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_pvc(
    path: str | Path, model: PreTrainedModel | None = None, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> PVC:
    """The add-on saved in the folder ``path``.

    ``model`` is needed when the checkpoint holds merger weights (they go into a copy of its projector); with a
    model, the add-on is placed on its vision tower's device and dtype unless ``device``/``dtype`` say otherwise.
    """
    folder = Path(path)
    config = json.loads((folder / CONFIG).read_text())
    has_merger = config.pop("merger", False)
    pvc = PVC(PVCConfig(**config))
    if has_merger:
        if model is None:
            raise ValueError(f"{folder} holds trained merger weights: pass the model to load them into a copy of its merger")
        pvc.merger = copy.deepcopy(vision_seams(model).projector)
    pvc.load_state_dict(load_file(folder / WEIGHTS))
    if model is not None:
        placement = vision_seams(model).placement
        device, dtype = device or placement["device"], dtype or placement["dtype"]
    return pvc.to(device=device, dtype=dtype)
