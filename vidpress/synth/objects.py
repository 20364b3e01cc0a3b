"""The closed set of needle objects (8 colours x 4 shapes) and how a needle frame looks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidpress.synth.draw import shape_mask

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "orange": (255, 140, 0),
    "yellow": (250, 230, 30),
    "green": (30, 200, 60),
    "cyan": (0, 210, 230),
    "blue": (30, 70, 255),
    "purple": (170, 50, 230),
    "white": (250, 250, 250),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
NEEDLE_BACKGROUND: tuple[int, int, int] = (0, 0, 0)
NEEDLE_RADIUS = 0.3  # fraction of min(height, width)


@dataclass(frozen=True)
class NeedleObject:
    """One object of the closed set, e.g. NeedleObject("red", "circle") named "red circle"."""

    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]


OBJECTS: tuple[NeedleObject, ...] = tuple(NeedleObject(colour, shape) for colour in COLOURS for shape in SHAPES)


def render_needle(obj: NeedleObject, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3]: ``obj`` drawn big and centred on the black needle background."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = NEEDLE_BACKGROUND
    radius = NEEDLE_RADIUS * min(height, width)
    frame[shape_mask(obj.shape, height, width, height / 2, width / 2, radius)] = obj.rgb
    return frame
