"""Model adapters: one per VLM family, chosen by the model's ``config.model_type``."""

from __future__ import annotations

from transformers import PreTrainedModel, ProcessorMixin

from vidpress.adapters.base import EncodedVideo, LLMInputs, VideoAdapter, model_inputs
from vidpress.adapters.internvl import InternVLAdapter
from vidpress.adapters.llava_onevision import LlavaOnevisionAdapter
from vidpress.adapters.qwen_vl import Qwen3VLAdapter, QwenVLAdapter

ADAPTERS: tuple[type[VideoAdapter], ...] = (QwenVLAdapter, Qwen3VLAdapter, LlavaOnevisionAdapter, InternVLAdapter)


def adapter_for(model: PreTrainedModel, processor: ProcessorMixin) -> VideoAdapter:
    """The adapter of ``model``'s family; raises ValueError for an unsupported family."""
    model_type = model.config.model_type
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter(model, processor)
    supported = sorted(t for a in ADAPTERS for t in a.model_types)
    raise ValueError(f"vidpress has no adapter for model_type {model_type!r}; supported: {supported}")


__all__ = ["ADAPTERS", "EncodedVideo", "LLMInputs", "VideoAdapter", "adapter_for", "model_inputs"]
