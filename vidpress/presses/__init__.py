"""Presses: one compression method per file, a dataclass each; ``PRESSES`` maps CLI names to classes."""

from __future__ import annotations

import dataclasses
import types
import typing

from vidpress.presses.adaretake import AdaReTaKePress
from vidpress.presses.base import CompositePress, Press, PressContext, as_press_list
from vidpress.presses.dedup import DedupFramePress
from vidpress.presses.dpselect import DPSelectPress
from vidpress.presses.lpcomp import LPCompPress
from vidpress.presses.pivotkv import PivotKVPress
from vidpress.presses.pvc import PVCPress
from vidpress.presses.qccomp import QCCompPress
from vidpress.presses.retake import ReTaKePress
from vidpress.presses.tome import ToMePress
from vidpress.presses.uniform import UniformFramePress
from vidpress.presses.xcomp import XCompPress

PRESSES: dict[str, type[Press]] = {
    "uniform": UniformFramePress,
    "dedup": DedupFramePress,
    "dpselect": DPSelectPress,
    "pivotkv": PivotKVPress,
    "adaretake": AdaReTaKePress,
    "retake": ReTaKePress,
    "tome": ToMePress,
    "qccomp": QCCompPress,
    "lpcomp": LPCompPress,
    "xcomp": XCompPress,
    "pvc": PVCPress,
}


def press_from_name(name: str, args: dict[str, str] | None = None) -> Press:
    """Build the press registered as ``name`` from string arguments (``{"num_frames": "8"}``)."""
    if name not in PRESSES:
        raise ValueError(f"unknown press {name!r}; available: {', '.join(sorted(PRESSES))}")
    cls = PRESSES[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, text in (args or {}).items():
        if key not in fields:
            raise ValueError(f"press {name!r} has no parameter {key!r}; parameters: {', '.join(sorted(fields))}")
        kwargs[key] = _parse(text, hints[key])
    return cls(**kwargs)


def _parse(text: str, hint) -> object:
    """Convert a CLI string to the field's type (int, float, bool, str, tuples, or None)."""
    if text.lower() == "none":
        return None
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = [t for t in typing.get_args(hint) if t is not type(None)] if is_union else [hint]
    for option in options:
        origin = typing.get_origin(option) or option
        try:
            if origin is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                return text.lower() in ("true", "1")
            if origin in (tuple, list):
                item = (typing.get_args(option) or (str,))[0]
                return origin(_parse(part, item) for part in text.split(","))
            if origin in (int, float, str):
                return origin(text)
        except ValueError:
            continue
    raise ValueError(f"cannot read {text!r} as {hint}")


__all__ = [
    "PRESSES",
    "AdaReTaKePress",
    "CompositePress",
    "DPSelectPress",
    "DedupFramePress",
    "LPCompPress",
    "PVCPress",
    "PivotKVPress",
    "Press",
    "PressContext",
    "QCCompPress",
    "ReTaKePress",
    "ToMePress",
    "UniformFramePress",
    "XCompPress",
    "as_press_list",
    "press_from_name",
]
