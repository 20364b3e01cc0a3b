"""Resumable training checkpoints: ``checkpoint-<step>/`` folders in the output folder.

Each holds the trained weights as the objective writes them (SCT: the model's ``save_pretrained`` and the
processor, only the LoRA adapter when training with LoRA; PVC: the add-on alone), ``trainer_state.json``
(step, epoch, position in the epoch, the config), the optimizer and scheduler states, and each process's
RNG states.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

STATE = "trainer_state.json"
PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_folder(output: str | Path, step: int) -> Path:
    return Path(output) / f"checkpoint-{step:07d}"


def latest_checkpoint(output: str | Path) -> Path | None:
    """The complete checkpoint of the highest step in ``output`` (one whose trainer state was written)."""
    folders = [p for p in Path(output).glob("checkpoint-*") if PATTERN.match(p.name) and (p / STATE).exists()]
    return max(folders, key=lambda p: int(PATTERN.match(p.name).group(1)), default=None)


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    folder: Path, write_weights: Callable[[Path], None], optimizer, scheduler, state: dict, *, rank: int, main: bool
) -> None:
    """Write a checkpoint; every process calls it (RNG per rank), the main one writes the rest.

    ``write_weights(folder)`` writes the trained weights. The trainer state is written last, so a folder
    without it (an interrupted save) is never resumed from.
    """
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng_states(), folder / f"rng-{rank}.pt")
    if not main:
        return
    write_weights(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    (folder / STATE).write_text(json.dumps(state, indent=2) + "\n")


def load_checkpoint(folder: Path, optimizer, scheduler, *, rank: int) -> dict:
    """Restore the optimizer, scheduler and this process's RNG from ``folder``; returns the trainer state.

    The trained weights are loaded by the caller (the objective's ``load``).
    """
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng = folder / f"rng-{rank}.pt"
    if rng.exists():
        set_rng_states(torch.load(rng, weights_only=False))
    return json.loads((folder / STATE).read_text())
