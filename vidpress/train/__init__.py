"""Training: the shared loop (``objective``) and its users, SCT (``sct``: XComp's supervised compression tuning
with LP-Comp active) and PVC (``vidpress.pvc.training``)."""

from vidpress.train.data import ConversationDataset, collate
from vidpress.train.encode import IGNORE, TrainSample, encode_conversation
from vidpress.train.loss import answer_loss, compressed
from vidpress.train.objective import Objective, TrainConfig, load_vlm, train
from vidpress.train.records import Conversation, conversation_from_record, read_conversations
from vidpress.train.sct import SCTConfig, SCTObjective, enable_gradient_checkpointing, freeze_vision_tower, train_sct

__all__ = [
    "IGNORE",
    "Conversation",
    "ConversationDataset",
    "Objective",
    "SCTConfig",
    "SCTObjective",
    "TrainConfig",
    "TrainSample",
    "answer_loss",
    "collate",
    "compressed",
    "conversation_from_record",
    "enable_gradient_checkpointing",
    "encode_conversation",
    "freeze_vision_tower",
    "load_vlm",
    "read_conversations",
    "train",
    "train_sct",
]
