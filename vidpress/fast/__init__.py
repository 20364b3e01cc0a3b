"""Faster stock-model paths that give the same outputs (installed on a model instance or a cache, never forked).

- :mod:`vidpress.fast.vision`: the Qwen-VL towers' window/unit attention as one SDPA call per segment length,
  and the switch of the towers' whole fast path.
- :mod:`vidpress.fast.vision_mlp`: gated vision MLPs on zero-padded weights of an aligned width.
- :mod:`vidpress.fast.vision_compile`: the vision blocks under ``torch.compile`` (opt-in).
- :mod:`vidpress.fast.decode`: KV buffers with room reserved after the prefill, written in place.
- :mod:`vidpress.fast.graph_decode`: decoding steps whose state lives on the device, replayed as a CUDA graph.
"""

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
