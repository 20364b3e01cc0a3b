"""Training: supervised compression tuning (XComp SCT) of a VLM with LP-Comp active in its forward passes."""

from vidpress.train.data import ConversationDataset, collate
from vidpress.train.encode import IGNORE, TrainSample, encode_conversation
from vidpress.train.loss import answer_loss, compressed
from vidpress.train.records import Conversation, conversation_from_record, read_conversations
from vidpress.train.sct import SCTConfig, enable_gradient_checkpointing, freeze_vision_tower, train_sct

__all__ = [
    "IGNORE",
    "Conversation",
    "ConversationDataset",
    "SCTConfig",
    "TrainSample",
    "answer_loss",
    "collate",
    "compressed",
    "conversation_from_record",
    "enable_gradient_checkpointing",
    "encode_conversation",
    "freeze_vision_tower",
    "read_conversations",
    "train_sct",
]
