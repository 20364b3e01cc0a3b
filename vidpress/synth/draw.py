"""Rasterise filled shapes as boolean masks on an H x W pixel grid (pixel centres at +0.5)."""

from __future__ import annotations

import numpy as np


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: ys [H, 1] and xs [1, W]."""
    return np.arange(height)[:, None] + 0.5, np.arange(width)[None, :] + 0.5


def circle_mask(height: int, width: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """Bool [H, W]: pixels within ``radius`` of the centre (cy, cx), all in pixels."""
    ys, xs = _grid(height, width)
    return (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2


def polygon_mask(height: int, width: int, vertices: np.ndarray) -> np.ndarray:
    """Bool [H, W]: pixels inside the polygon ``vertices`` [V, 2] of (y, x) points (even-odd rule)."""
    ys, xs = _grid(height, width)
    inside = np.zeros((height, width), dtype=bool)
    for (y0, x0), (y1, x1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 > ys) != (y1 > ys)
        x_cross = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < x_cross)
    return inside


def _ring(cy: float, cx: float, radii: np.ndarray, start_angle: float) -> np.ndarray:
    """Vertices [V, 2] at ``radii`` around (cy, cx), evenly spaced in angle from ``start_angle``."""
    angles = start_angle + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return np.stack([cy + radii * np.sin(angles), cx + radii * np.cos(angles)], axis=1)


def shape_mask(shape: str, height: int, width: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """Bool [H, W] for a named shape of roughly ``radius`` pixels around (cy, cx).

    Shapes: circle, square, triangle (point up), star (five points, point up), bar (wide, flat rectangle).
    """
    up = -np.pi / 2  # y grows downwards
    if shape == "circle":
        return circle_mask(height, width, cy, cx, radius)
    if shape == "square":
        return polygon_mask(height, width, _ring(cy, cx, np.full(4, 1.2 * radius), np.pi / 4))
    if shape == "triangle":  # centred on its bounding box, not its centroid
        return polygon_mask(height, width, _ring(cy + 0.3 * radius, cx, np.full(3, 1.2 * radius), up))
    if shape == "star":
        radii = np.tile([1.25 * radius, 0.5 * radius], 5)
        return polygon_mask(height, width, _ring(cy, cx, radii, up))
    if shape == "bar":
        half_h, half_w = 0.45 * radius, 1.3 * radius
        corners = [(cy - half_h, cx - half_w), (cy - half_h, cx + half_w), (cy + half_h, cx + half_w), (cy + half_h, cx - half_w)]
        return polygon_mask(height, width, np.array(corners))
    raise ValueError(f"unknown shape {shape!r}")
