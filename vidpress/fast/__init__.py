"""Faster stock-model paths that give the same outputs (installed on a model instance or a cache, never forked)."""

from vidpress.fast.decode import BufferedLayer, decode_attention, reserve
from vidpress.fast.vision import NAME, disable_fast_vision, enable_fast_vision, fast_vision, packed_sdpa, segment_groups, stock_vision

__all__ = [
    "NAME",
    "BufferedLayer",
    "decode_attention",
    "disable_fast_vision",
    "enable_fast_vision",
    "fast_vision",
    "packed_sdpa",
    "reserve",
    "segment_groups",
    "stock_vision",
]
