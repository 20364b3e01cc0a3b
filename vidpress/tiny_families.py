"""Tiny LLaVA-OneVision and InternVL models built from configs, with the tokenizer of :mod:`vidpress.tiny`.

Random (untrained) models of the real transformers classes, shaped like the released checkpoints at a small
scale: LLaVA-OneVision has a SigLIP tower whose 7 x 7 patch grid is pooled to 4 x 4 tokens per frame (as 27 x 27
is pooled to 14 x 14 in the real models) and a Qwen2 LLM; InternVL has an InternViT tower whose 8 x 8 grid is
pixel-shuffled to 4 x 4 tokens per frame and a Qwen3 LLM (as InternVL3.5; its q/k norms are then exercised).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

from vidpress.tiny import build_tokenizer

FAMILIES = ("llava_onevision", "internvl")

# The released LLaVA-OneVision layout: "<|im_start|>user <video>\n{question}<|im_end|>\n<|im_start|>assistant\n".
LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}<|video_pad|>"
    "{% elif item['type'] == 'image' %}<|image_pad|>"
    "{% elif item['type'] == 'text' %}{{ '\\n' + item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The released InternVL layout: "<|im_start|>user\n<video>\n{question}<|im_end|>\n<|im_start|>assistant\n";
# the processor expands the video placeholder to "Frame1: <img>...</img>\nFrame2: ...".
INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}<|video_pad|>\n"
    "{% elif item['type'] == 'image' %}<|image_pad|>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# InternVL's processor reads these names from its tokenizer; the Qwen vision tokens stand in for
# "<img>", "</img>" and "<IMG_CONTEXT>".
INTERNVL_TOKENS = {
    "start_image_token": "<|vision_start|>",
    "end_image_token": "<|vision_end|>",
    "context_image_token": "<|image_pad|>",
}


def _text_config(
    tokenizer: PreTrainedTokenizerFast, model_type: str, *, hidden_size: int = 64, num_layers: int = 4, init_std: float = 0.2
) -> dict:
    """A tiny LLM config (``qwen2`` or ``qwen3``) whose vocabulary and special ids match ``tokenizer``."""
    heads = 4
    return dict(
        model_type=model_type,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        head_dim=hidden_size // heads,
        max_position_embeddings=32768,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=init_std,
    )


def build_tiny_llava_onevision(*, seed: int = 0, corpus: list[str] | None = None) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A random tiny LLaVA-OneVision (float32, eval mode, SDPA) and its processor: 16 LLM tokens per frame."""
    import transformers as tf

    tokenizer = _family_tokenizer(corpus, LLAVA_ONEVISION_TEMPLATE)
    image_size, patch = 98, 14
    size = {"height": image_size, "width": image_size}
    processor = tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[image_size, image_size]]),
        video_processor=tf.LlavaOnevisionVideoProcessor(size=size, do_sample_frames=False),
        tokenizer=tokenizer,
        num_image_tokens=(image_size // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_TEMPLATE,
    )
    vision = dict(
        model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, image_size=image_size, patch_size=patch,
    )
    config = tf.LlavaOnevisionConfig(
        text_config=_text_config(tokenizer, "qwen2"),
        vision_config=vision,
        image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id,
        image_grid_pinpoints=[[image_size, image_size]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=True,
    )
    return _instantiate(tf.LlavaOnevisionForConditionalGeneration, config, seed), processor


def build_tiny_internvl(*, seed: int = 0, corpus: list[str] | None = None) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A random tiny InternVL (float32, eval mode, SDPA) and its processor: 16 LLM tokens per frame."""
    import transformers as tf

    tokenizer = _family_tokenizer(corpus, INTERNVL_TEMPLATE, INTERNVL_TOKENS)
    image_size, patch, ratio = 112, 14, 0.5
    tokens_per_frame = int((image_size // patch * ratio) ** 2)
    size = {"height": image_size, "width": image_size}
    processor = tf.InternVLProcessor(
        image_processor=tf.GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=tf.InternVLVideoProcessor(size=size, do_sample_frames=False),
        tokenizer=tokenizer,
        image_seq_length=tokens_per_frame,
        chat_template=INTERNVL_TEMPLATE,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch,
    )
    config = tf.InternVLConfig(
        text_config=_text_config(tokenizer, "qwen3", init_std=0.3),  # 0.2 repeats one token
        vision_config=vision,
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=tokens_per_frame,
        downsample_ratio=ratio,
        tie_word_embeddings=True,
    )
    return _instantiate(tf.InternVLForConditionalGeneration, config, seed), processor


def build_tiny_family(family: str, *, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A random tiny model of ``family`` (``llava_onevision`` or ``internvl``) and its processor."""
    builders = {"llava_onevision": build_tiny_llava_onevision, "internvl": build_tiny_internvl}
    if family not in builders:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    return builders[family](seed=seed)


def _family_tokenizer(
    corpus: list[str] | None, chat_template: str, names: dict[str, str] | None = None
) -> PreTrainedTokenizerFast:
    """The tokenizer of :func:`vidpress.tiny.build_tokenizer` with the family's chat template and more named
    special tokens (``tokenizer.<name>`` and ``<name>_id``, for tokens already in its vocabulary)."""
    tokenizer = build_tokenizer(corpus)
    kwargs = dict(tokenizer.init_kwargs)
    kwargs["extra_special_tokens"] = {**kwargs.get("extra_special_tokens", {}), **(names or {})}
    kwargs["chat_template"] = chat_template
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, **kwargs)


def _instantiate(model_class: type[PreTrainedModel], config, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = model_class._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()
