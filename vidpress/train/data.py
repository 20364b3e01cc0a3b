"""The SCT dataset: JSONL conversations → decoded videos → tokenized samples with answer-only labels."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from vidpress.adapters import VideoAdapter
from vidpress.train.encode import TrainSample, encode_conversation
from vidpress.train.records import Conversation, read_conversations
from vidpress.video import load_video


class ConversationDataset(Dataset):
    """Samples of a JSONL file (formats in :mod:`vidpress.train.records`), each video sampled uniformly.

    Parameters
    ----------
    path : the JSONL file; video paths are relative to its folder.
    adapter : the model's adapter (its processor and chat template tokenize the samples).
    num_frames : frames sampled uniformly from each video.
    max_side : resize frames so their longer side is at most this (None: as decoded).
    """

    def __init__(self, path: str | Path, adapter: VideoAdapter, *, num_frames: int, max_side: int | None = None):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.conversations: list[Conversation] = read_conversations(path)
        self.adapter = adapter
        self.num_frames = num_frames
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, index: int) -> TrainSample:
        conversation = self.conversations[index]
        video = load_video(conversation.video, num_frames=self.num_frames, max_side=self.max_side)
        return encode_conversation(self.adapter, video, conversation.turns)


def collate(samples: list[TrainSample]) -> list[TrainSample]:
    """Keep a batch as a list: each sample is its own forward (LP-Comp drops a different span per sample)."""
    return samples
