"""Tiny Qwen-VL models built from configs, with a tokenizer trained here: no download needed.

They are random (untrained) models of the real transformers classes. The tests use them to check that
every stage is exact, and ``vidpress demo`` uses one as its offline default until a trained checkpoint ships.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# One user turn holding the video (and images) then the text, in the Qwen chat format.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DEFAULT_CORPUS = [
    "What object appeared in the video? Answer with the option's letter from the given choices directly.",
    "How many times did the red circle appear? Which appeared first? In which part of the video?",
    "The video shows a blue square, a green triangle, a yellow star and a white cross moving on a grey background.",
    "A. B. C. D. The answer is A. The answer is B. The answer is C. The answer is D.",
    "beginning early middle late middle end one two three four seconds frame user assistant system",
    "Describe the video. Summarise what happens. Who is in the scene and what are they doing?",
]


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer with the Qwen special tokens on ``corpus``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus or DEFAULT_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )


def build_processor(family: str, tokenizer: PreTrainedTokenizerFast, max_side: int = 112) -> ProcessorMixin:
    """The family's own HF processor around ``tokenizer``, sized for frames up to ``max_side`` pixels."""
    import transformers as tf

    _check_family(family)
    patch = 16 if family == "qwen3_vl" else 14
    factor = patch * 2
    size = {"shortest_edge": factor * factor, "longest_edge": max_side * max_side}
    common = dict(patch_size=patch, temporal_patch_size=2, merge_size=2, size=size)
    image_processor = tf.Qwen2VLImageProcessor(**common)
    if family == "qwen3_vl":  # its pixel budget is for the whole video: allow max_side for 8192 frames
        common["size"] = dict(size, longest_edge=max_side * max_side * 8192)
        video_processor = tf.Qwen3VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=False)
        processor_class = tf.Qwen3VLProcessor
    else:
        video_processor = tf.Qwen2VLVideoProcessor(**common, do_sample_frames=False, cap_pixels_per_frame=False)
        processor_class = tf.Qwen2_5_VLProcessor if family == "qwen2_5_vl" else tf.Qwen2VLProcessor
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(
    family: str,
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 4,
    vision_hidden_size: int = 32,
    vision_depth: int = 2,
):
    """A tiny config of ``family`` whose special token ids match ``tokenizer``."""
    import transformers as tf

    _check_family(family)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    ]}
    heads, kv_heads = 4, 2
    head_dim = hidden_size // heads
    half = head_dim // 2
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32768,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        bos_token_id=None,
        initializer_range=0.2,
    )
    vision = dict(
        depth=vision_depth, hidden_size=vision_hidden_size, num_heads=2, temporal_patch_size=2, spatial_merge_size=2,
        in_channels=3,
    )
    if family == "qwen3_vl":
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half - 2 * (half // 4), half // 4, half // 4], "mrope_interleaved": True}
        vision.update(
            patch_size=16, intermediate_size=2 * vision_hidden_size, out_hidden_size=hidden_size,
            num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
        )
        text.update(head_dim=head_dim, rope_parameters=rope)
        return tf.Qwen3VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=True)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]}
    text.update(rope_parameters=rope)
    if family == "qwen2_5_vl":
        vision.update(
            patch_size=14, intermediate_size=2 * vision_hidden_size, out_hidden_size=hidden_size, window_size=56,
            fullatt_block_indexes=[vision_depth - 1], tokens_per_second=2,
        )
        return tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=True)
    vision.update(patch_size=14, embed_dim=vision_hidden_size, mlp_ratio=2, hidden_size=hidden_size)
    return tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids, tie_word_embeddings=True)


def build_tiny(family: str, *, seed: int = 0, corpus: list[str] | None = None) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A random tiny model of ``family`` (float32, eval mode, SDPA) and its processor."""
    import transformers as tf

    tokenizer = build_tokenizer(corpus)
    processor = build_processor(family, tokenizer)
    config = build_config(family, tokenizer)
    model_class = {
        "qwen2_vl": tf.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": tf.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": tf.Qwen3VLForConditionalGeneration,
    }[family]
    torch.manual_seed(seed)
    model = model_class._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval(), processor


def save_tiny(family: str, folder: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny model of ``family`` and save it with its processor, for ``from_pretrained``."""
    model, processor = build_tiny(family, seed=seed)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
