"""Work floors of each stage: the FLOPs or bytes no implementation can avoid, counted from the model itself.

- vision encoder: every linear layer and convolution applied once per token it sees (patch tokens in the
  blocks and the patch embedding, merged tokens in the mergers, Qwen3-VL's deepstack mergers included),
  plus attention 4 * width * sum(segment length^2) per block, the segments being the temporal units
  (full-attention blocks) or Qwen2.5-VL's windows. Matches ``torch.utils.flop_counter`` on the stock tower.
- LLM prefill: per decoder layer 2 * tokens * (its linear weights) + 4 * (query width) per query-key pair
  its attention scores, + the LM head for the last token. For a vidpress answer both counts are those the
  prefill ran, layer by layer (``AnswerStats.prefill_tokens_per_layer`` / ``prefill_pairs_per_layer``:
  LP-Comp's thinned layers, PivotKV's chunks over the entries it kept, AdaReTaKe's scoring passes); for
  ``generate`` the prompt's tokens in one causal pass.
- decode step: read every LLM weight once (the embedding table excepted: one row) and the whole KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.vision_utils import get_vision_window_index

PATCH_LEVEL_PREFIXES = ("blocks.", "patch_embed.")


def _weight_count(module: nn.Module, patch_level: bool) -> int:
    """Weights of the linear and convolution layers of a vision tower, at the patch or the merged level."""
    total = 0
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Linear, nn.Conv3d)) and name.startswith(PATCH_LEVEL_PREFIXES) == patch_level:
            total += sub.weight.numel()
    return total


def _segment_square_sum(visual: nn.Module, grid_thw: torch.Tensor, windowed: bool) -> int:
    """Sum of squared attention-segment lengths (in patches) of one block."""
    if not windowed:
        return int((grid_thw[:, 0] * (grid_thw[:, 1] * grid_thw[:, 2]) ** 2).sum())
    config = visual.config
    _, cu_seqlens = get_vision_window_index(grid_thw, config.spatial_merge_size, config.window_size, config.patch_size)
    return int((cu_seqlens.diff().long() ** 2).sum())


def vision_flops(visual: nn.Module, grid_thw: torch.Tensor) -> float:
    """FLOPs of a Qwen-VL vision tower (``model.model.visual``) on patch grids ``grid_thw`` [n, 3] (t, h, w)."""
    grid_thw = grid_thw.cpu().long()
    config = visual.config
    patches = int(grid_thw.prod(1).sum())
    merged = patches // config.spatial_merge_size**2
    width = getattr(config, "embed_dim", None) or config.hidden_size
    full_blocks = set(getattr(config, "fullatt_block_indexes", range(len(visual.blocks))))
    windowed = hasattr(config, "window_size")
    attention = sum(
        4 * width * _segment_square_sum(visual, grid_thw, windowed and index not in full_blocks)
        for index in range(len(visual.blocks))
    )
    return 2.0 * patches * _weight_count(visual, True) + 2.0 * merged * _weight_count(visual, False) + attention


def _decoder_linear_weights(model: nn.Module) -> int:
    layers = model.model.language_model.layers
    return sum(m.weight.numel() for m in layers.modules() if isinstance(m, nn.Linear))


def prefill_flops(
    model: nn.Module, tokens: int | Sequence[int], *, pairs: Sequence[int] | None = None, causal: bool = True
) -> float:
    """FLOPs of an LLM prefill returning the last token's logits.

    ``tokens``: the query tokens, one count or one per decoder layer (LP-Comp thins the video from layer to
    layer). ``pairs``: the query-key pairs each layer's attention scored (chunked and pruned prefills score
    fewer); by default each layer's tokens in one causal pass, n (n + 1) / 2, or with ``causal=False`` the
    full score matrix n^2, as a dense count (torch's FLOP counter) does.
    """
    text = model.config.get_text_config()
    layers = text.num_hidden_layers
    per_layer = [tokens] * layers if isinstance(tokens, int) else list(tokens)
    if pairs is None:
        pairs = [n * (n + 1) // 2 if causal else n * n for n in per_layer]
    if not len(per_layer) == len(pairs) == layers:
        raise ValueError(f"{len(per_layer)} per-layer token counts and {len(pairs)} pair counts for {layers} decoder layers")
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    query_width = text.num_attention_heads * head_dim
    attention = 4 * sum(pairs) * query_width
    linear = 2.0 * sum(per_layer) * _decoder_linear_weights(model) / layers
    return linear + attention + 2 * model.lm_head.weight.numel()


def kv_bytes(model: nn.Module, kv_lengths: list[int] | int) -> float:
    """Bytes of a KV cache holding ``kv_lengths`` entries per layer (one int: the same in every layer)."""
    text = model.config.get_text_config()
    if isinstance(kv_lengths, int):
        kv_lengths = [kv_lengths] * text.num_hidden_layers
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = model.lm_head.weight.element_size()
    return 2.0 * text.num_key_value_heads * head_dim * element * sum(kv_lengths)


def decode_step_bytes(model: nn.Module, kv_lengths: list[int] | int) -> float:
    """Bytes one decode step must read: the LLM's weights (one embedding row) and the KV cache."""
    language = model.model.language_model
    weights = sum(p.numel() * p.element_size() for p in language.parameters())
    embedding = language.get_input_embeddings().weight
    weights -= embedding.numel() * embedding.element_size()
    if model.lm_head.weight is not embedding:
        weights += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    return weights + kv_bytes(model, kv_lengths)
