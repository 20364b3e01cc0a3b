"""Faster stock-model paths that give the same outputs (installed on a model instance, never forked)."""

from vidpress.fast.vision import NAME, disable_fast_vision, enable_fast_vision, fast_vision, packed_sdpa, segment_groups

__all__ = ["NAME", "disable_fast_vision", "enable_fast_vision", "fast_vision", "packed_sdpa", "segment_groups"]
