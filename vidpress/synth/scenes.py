"""Scenes: the haystack a needle hides in.

A video is a run of scenes separated by hard cuts. Each scene has a background (solid colour, gradient or
two-colour texture from a small muted palette) and 1-3 distractor shapes that either all stay still for the
whole scene (a static stretch: consecutive frames are identical) or drift linearly, bouncing off the borders.
Positions and sizes are fractions of the frame, so one scene plan renders at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidpress.synth.draw import shape_mask

BACKGROUND_PALETTE: tuple[tuple[int, int, int], ...] = (
    (46, 52, 64),
    (94, 80, 63),
    (60, 95, 70),
    (125, 125, 135),
    (180, 170, 145),
    (70, 85, 130),
    (130, 80, 105),
    (150, 185, 180),
)
BACKGROUND_KINDS: tuple[str, ...] = ("solid", "vertical_gradient", "horizontal_gradient", "stripes", "checker")
DISTRACTOR_SHAPES: tuple[str, ...] = ("circle", "square", "bar")
SCENE_LENGTH = (8, 40)  # frames, inclusive
STILL_PROBABILITY = 0.4
MIN_CUT_CONTRAST = 30.0  # least mean-colour difference (0..255) between consecutive backgrounds
DISTRACTOR_RADIUS = (0.09, 0.18)  # fraction of min(height, width)
DRIFT_SPEED = (0.004, 0.02)  # fraction of the frame per frame


@dataclass(frozen=True)
class Background:
    """A scene background: ``kind`` blends ``colour_a`` into ``colour_b`` (solid uses ``colour_a`` only)."""

    kind: str
    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]

    def mean_colour(self) -> np.ndarray:
        """float [3]: the average colour over the frame."""
        a, b = np.array(self.colour_a, float), np.array(self.colour_b, float)
        return a if self.kind == "solid" else (a + b) / 2

    def render(self, height: int, width: int) -> np.ndarray:
        """uint8 [H, W, 3]."""
        ys = (np.arange(height)[:, None] + 0.5) / height
        xs = (np.arange(width)[None, :] + 0.5) / width
        weights = {
            "solid": np.zeros((1, 1)),
            "vertical_gradient": ys,
            "horizontal_gradient": xs,
            "stripes": np.floor((ys + xs) * 4) % 2,
            "checker": (np.floor(ys * 4) + np.floor(xs * 4)) % 2,
        }[self.kind]
        a, b = np.array(self.colour_a, float), np.array(self.colour_b, float)
        image = a + (b - a) * weights[..., None]
        return np.broadcast_to(np.rint(image).astype(np.uint8), (height, width, 3)).copy()


def _reflect(p: float, lo: float, hi: float) -> float:
    """Fold ``p`` into [lo, hi] as if bouncing off both walls."""
    span = hi - lo
    u = (p - lo) % (2 * span)
    return lo + span - abs(u - span)


@dataclass(frozen=True)
class Distractor:
    """A shape starting at (y, x) that drifts by (vy, vx) per frame; all fractions of the frame size."""

    shape: str
    colour: tuple[int, int, int]
    radius: float
    y: float
    x: float
    vy: float
    vx: float

    def centre(self, dt: int) -> tuple[float, float]:
        """(y, x) after ``dt`` frames, kept on screen by bouncing off the borders."""
        margin = 1.3 * self.radius
        return _reflect(self.y + self.vy * dt, margin, 1 - margin), _reflect(self.x + self.vx * dt, margin, 1 - margin)


@dataclass(frozen=True)
class Scene:
    """Frames [start, start + length) of a video: one background and its distractors."""

    start: int
    length: int
    background: Background
    distractors: tuple[Distractor, ...]

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def still(self) -> bool:
        """True when nothing moves, so every frame of the scene is identical."""
        return all(d.vy == 0 and d.vx == 0 for d in self.distractors)

    def render(self, t: int, height: int, width: int, background: np.ndarray | None = None) -> np.ndarray:
        """uint8 [H, W, 3]: frame ``t`` (absolute index); pass ``background`` (from Background.render) to reuse it."""
        frame = (self.background.render(height, width) if background is None else background).copy()
        side = min(height, width)
        for d in self.distractors:
            y, x = d.centre(t - self.start)
            frame[shape_mask(d.shape, height, width, y * height, x * width, d.radius * side)] = d.colour
        return frame


def _draw_background(rng: np.random.Generator, previous: Background | None) -> Background:
    """A random background whose mean colour differs from ``previous`` by at least MIN_CUT_CONTRAST."""
    while True:
        kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
        a, b = rng.choice(len(BACKGROUND_PALETTE), size=2, replace=False)
        background = Background(kind, BACKGROUND_PALETTE[a], BACKGROUND_PALETTE[b])
        if previous is None or np.abs(background.mean_colour() - previous.mean_colour()).mean() >= MIN_CUT_CONTRAST:
            return background


def _draw_distractors(rng: np.random.Generator, background: Background, still: bool) -> tuple[Distractor, ...]:
    """1-3 shapes in palette colours not used by ``background``; zero velocity when ``still``."""
    colours = [c for c in BACKGROUND_PALETTE if c not in (background.colour_a, background.colour_b)]
    distractors = []
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(*DISTRACTOR_RADIUS)
        y, x = rng.uniform(1.3 * radius, 1 - 1.3 * radius, size=2)
        speed, angle = (0.0, 0.0) if still else (rng.uniform(*DRIFT_SPEED), rng.uniform(0, 2 * np.pi))
        distractors.append(
            Distractor(
                shape=DISTRACTOR_SHAPES[rng.integers(len(DISTRACTOR_SHAPES))],
                colour=colours[rng.integers(len(colours))],
                radius=radius,
                y=y,
                x=x,
                vy=speed * np.sin(angle),
                vx=speed * np.cos(angle),
            )
        )
    return tuple(distractors)


def plan_scenes(num_frames: int, rng: np.random.Generator, scene_length: tuple[int, int] = SCENE_LENGTH) -> tuple[Scene, ...]:
    """Scenes covering frames [0, num_frames), each ``scene_length`` frames (inclusive range, last one cut short).

    Scenes are drawn one after another, so a shorter video from the same generator state is a prefix of a longer one.
    """
    scenes: list[Scene] = []
    start, previous = 0, None
    while start < num_frames:
        length = min(int(rng.integers(scene_length[0], scene_length[1] + 1)), num_frames - start)
        background = _draw_background(rng, previous)
        still = bool(rng.random() < STILL_PROBABILITY)
        scenes.append(Scene(start, length, background, _draw_distractors(rng, background, still)))
        start, previous = start + length, background
    return tuple(scenes)
