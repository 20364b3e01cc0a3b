"""vidpress_sdpa: the stock SDPA attention, with a causal mask that fits each layer's own KV length."""

from __future__ import annotations

import torch
from torch import nn

from vidpress.attention import bottom_right_causal_mask, per_layer_sdpa


def test_bottom_right_mask():
    mask = bottom_right_causal_mask(2, 5, torch.device("cpu"))[0, 0]
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(bottom_right_causal_mask(4, 4, torch.device("cpu"))[0, 0], torch.ones(4, 4).tril().bool())


def test_a_mask_of_another_layer_length_is_replaced():
    torch.manual_seed(0)
    module = nn.Module()
    module.is_causal, module.num_key_value_groups = True, 2
    query, key, value = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    stale = torch.ones(1, 1, 3, 10, dtype=torch.bool)  # built for a longer layer
    out, _ = per_layer_sdpa(module, query, key, value, stale, scaling=8**-0.5)
    keys, values = key.repeat_interleave(2, 1), value.repeat_interleave(2, 1)
    scores = (query @ keys.transpose(-1, -2)) * 8**-0.5
    scores = scores.masked_fill(~bottom_right_causal_mask(3, 7, torch.device("cpu")), float("-inf"))
    expected = (scores.softmax(-1) @ values).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_a_fitting_mask_is_used_as_given():
    module = nn.Module()
    module.is_causal, module.num_key_value_groups = True, 1
    query, key, value = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    only_first = torch.zeros(1, 1, 3, 5, dtype=torch.bool)
    only_first[..., 0] = True
    out, _ = per_layer_sdpa(module, query, key, value, only_first)
    torch.testing.assert_close(out, value[:, :, :1].expand(1, 2, 3, 8).transpose(1, 2))
