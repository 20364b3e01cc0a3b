"""An HTML page showing a run's sampled frames and which of them reached the LLM."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image


def _png_data_uri(frame: np.ndarray, height: int = 64) -> str:
    image = Image.fromarray(frame)
    image = image.resize((max(1, round(image.width * height / image.height)), height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_report(
    path: str | Path,
    frames: np.ndarray,
    frame_indices: list[int],
    kept_frames: list[int],
    rows: dict[str, str],
    highlight: list[int] = (),
) -> Path:
    """Write an HTML page: a table of ``rows`` (label → text), then every sampled frame (uint8 [T, H, W, 3])
    with its source index; kept frames are framed in green, dropped ones faded, ``highlight`` ones (e.g. the
    needle) marked with a star."""
    kept, marked = set(kept_frames), set(highlight)
    cells = []
    for frame, index in zip(frames, frame_indices):
        index = int(index)
        style = "border:3px solid #2a2" if index in kept else "border:3px solid #ccc;opacity:.35"
        label = f"{index}{' ★' if index in marked else ''}"
        cells.append(f'<figure style="margin:2px;display:inline-block;text-align:center"><img src="{_png_data_uri(frame)}" '
                     f'style="{style}"><figcaption style="font:11px sans-serif">{label}</figcaption></figure>')
    table = "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows.items())
    page = (
        "<!doctype html><meta charset=utf-8><title>vidpress run</title>"
        f"<body style='font-family:sans-serif'><h2>vidpress run</h2><table>{table}</table>"
        f"<p>{len(kept & set(map(int, frame_indices)))} of {len(frame_indices)} sampled frames kept "
        "(green: kept, faded: dropped, ★: needle)</p><div>" + "".join(cells) + "</div></body>"
    )
    path = Path(path)
    path.write_text(page)
    return path
