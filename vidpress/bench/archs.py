"""The architectures the benchmark runs: real configs kept in the repo, built with random weights.

``configs/*.json`` hold the published ``config.json`` values of Qwen2.5-VL-7B-Instruct and
Qwen3-VL-8B-Instruct (sizes, layers, heads, vision tower, M-RoPE sections, token ids). Nothing is
downloaded: the weights are random (the default initialisation, in bf16 on GPU) and the tokenizer is the
small one trained by :func:`vidpress.tiny.build_tokenizer`. The config's special token ids are replaced by
that tokenizer's and the vocabulary keeps the config's size (ids past the tokenizer decode to nothing):
the text does not matter for timing, the shapes do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, ProcessorMixin

from vidpress.tiny import build_config, build_processor, build_tokenizer

CONFIG_DIR = Path(__file__).parent / "configs"
MODEL_CLASSES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}
CONFIG_CLASSES = {"qwen2_vl": "Qwen2VLConfig", "qwen2_5_vl": "Qwen2_5_VLConfig", "qwen3_vl": "Qwen3VLConfig"}
SPECIAL_IDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}


@dataclass(frozen=True)
class Arch:
    """One benchmarked architecture.

    Attributes
    ----------
    name : CLI name (``--arch``).
    family : model family (``qwen2_5_vl``, ``qwen3_vl``...).
    config_file : JSON file in ``configs/``; None builds :func:`vidpress.tiny.build_config`'s tiny config.
    frame_size : (height, width) of the synthetic video's frames.
    """

    name: str
    family: str
    config_file: str | None
    frame_size: tuple[int, int]

    @property
    def is_tiny(self) -> bool:
        return self.config_file is None


ARCHS: dict[str, Arch] = {
    arch.name: arch
    for arch in [
        Arch("qwen2_5_vl_7b", "qwen2_5_vl", "qwen2_5_vl_7b.json", (252, 448)),
        Arch("qwen3_vl_8b", "qwen3_vl", "qwen3_vl_8b.json", (252, 448)),  # the processor rounds 252 to 256
        Arch("tiny", "qwen2_5_vl", None, (56, 112)),
        Arch("tiny_qwen3_vl", "qwen3_vl", None, (64, 112)),
    ]
}


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[name]


def load_config(arch: Arch, tokenizer):
    """The transformers config of ``arch``, with ``tokenizer``'s special token ids."""
    import transformers as tf

    if arch.is_tiny:
        return build_config(arch.family, tokenizer)
    values = json.loads((CONFIG_DIR / arch.config_file).read_text())
    values.update({key: tokenizer.convert_tokens_to_ids(token) for key, token in SPECIAL_IDS.items()})
    return getattr(tf, CONFIG_CLASSES[arch.family]).from_dict(values)


def build_model(arch: Arch, device: torch.device, dtype: torch.dtype) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A random-weight model of ``arch`` created directly on ``device`` (SDPA, eval mode) and its processor."""
    import transformers as tf

    tokenizer = build_tokenizer()
    processor = build_processor(arch.family, tokenizer, max_side=max(arch.frame_size))
    config = load_config(arch, tokenizer)
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(tf, MODEL_CLASSES[arch.family])._from_config(config, attn_implementation="sdpa", dtype=dtype)
    return model.eval(), processor
