"""One conversation about a video → the model's inputs with next-token labels on the answers only.

The first user turn (video + text) goes through ``adapter.prepare``, the very prompt ``VideoQA.ask`` builds,
so training and inference see the same tokens. Later pieces are the chat template's own text between turns,
tokenized separately: each answer is tokenized on its own, as greedy decoding produces it after the
generation prompt. Labels mark the answer tokens up to and including the end-of-turn token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vidpress.adapters import VideoAdapter
from vidpress.video import Video

IGNORE = -100


@dataclass
class TrainSample:
    """A tokenized conversation (batch size 1).

    Attributes
    ----------
    inputs : the processor's output with the conversation's ``input_ids`` [1, L] and ``attention_mask`` [1, L]
        (Qwen-VL: ``mm_token_type_ids`` [1, L], ``pixel_values_videos``, ``video_grid_thw``, and
        ``second_per_grid_ts`` for Qwen2.5-VL; InternVL: ``pixel_values``), and vidpress's ``timestamps``.
    labels : [L] the token to predict AT each position's own index (``IGNORE`` where not trained); the
        loss shifts them by one.
    unit_counts : [T'] visual tokens per temporal unit.
    video_token_id : id of the visual placeholder tokens.
    """

    inputs: dict[str, Tensor]
    labels: Tensor
    unit_counts: Tensor
    video_token_id: int

    @property
    def is_video(self) -> Tensor:
        """[L] bool, the visual placeholders."""
        return self.inputs["input_ids"][0] == self.video_token_id

    @property
    def num_answer_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


def _message(role: str, text: str, video: bool = False) -> dict:
    content = ([{"type": "video"}] if video else []) + [{"type": "text", "text": text}]
    return {"role": role, "content": content}


def _pieces(adapter: VideoAdapter, turns: tuple[tuple[str, str], ...]) -> list[tuple[str, bool]]:
    """The chat template's text after the first user turn's prompt, as (text, is_answer) pieces."""
    messages = [_message(role, text, video=index == 0) for index, (role, text) in enumerate(turns)]
    render = adapter.processor.apply_chat_template
    done = render(messages[:1], add_generation_prompt=True, tokenize=False)
    pieces = []
    for index, (role, _) in enumerate(turns):
        if role != "assistant":
            continue
        prompt = render(messages[:index], add_generation_prompt=True, tokenize=False)
        answered = render(messages[: index + 1], tokenize=False)
        if not (prompt.startswith(done) and answered.startswith(prompt)):
            raise ValueError("the chat template does not render a conversation as a prefix of its continuation")
        if index > 1:
            pieces.append((prompt[len(done):], False))
        pieces.append((answered[len(prompt):], True))
        done = answered
    return pieces


def encode_conversation(adapter: VideoAdapter, video: Video, turns: tuple[tuple[str, str], ...]) -> TrainSample:
    """Tokenize ``turns`` (first a user turn, about ``video``) for training; see the module docstring."""
    inputs = adapter.prepare(video, turns[0][1])
    tokenizer = adapter.processor.tokenizer
    eos = adapter.eos_token_ids
    ids = [inputs["input_ids"][0]]
    labels = [torch.full_like(ids[0], IGNORE)]
    for text, is_answer in _pieces(adapter, turns):
        piece = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=ids[0].dtype)
        ids.append(piece)
        label = torch.full_like(piece, IGNORE)
        if is_answer:
            ends = [i for i, token in enumerate(piece.tolist()) if token in eos]
            stop = ends[0] + 1 if ends else len(piece)
            label[:stop] = piece[:stop]
        labels.append(label)
    input_ids = torch.cat(ids).unsqueeze(0)
    extra = input_ids.shape[1] - inputs["input_ids"].shape[1]
    model_inputs = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    model_inputs["input_ids"] = input_ids
    model_inputs["attention_mask"] = torch.ones_like(input_ids)
    if "mm_token_type_ids" in inputs:
        types = inputs["mm_token_type_ids"]
        model_inputs["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, extra)], dim=1)
    video_token_id = adapter.video_token_id
    units = adapter.video_units(inputs)
    per_unit = int((input_ids[0] == video_token_id).sum()) // units
    return TrainSample(model_inputs, torch.cat(labels), torch.full((units,), per_unit), video_token_id)
