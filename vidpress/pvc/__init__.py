"""PVC (https://arxiv.org/abs/2412.09613): temporal modules in the vision tower and per-frame token compression.

- ``modules``: time embedding, AdaLN modulation, causal temporal attention (zero-initialised branches);
- ``compressor``: per-unit compression to a token budget, placed in representative slots;
- ``model``: ``PVCConfig`` and the ``PVC`` module holding every added parameter;
- ``attach``: hooks on a Qwen-VL or InternVL vision tower, with the temporal state carried across chunked calls;
- ``io``: safetensors save/load of the add-on alone; ``images``: images as static videos;
- ``training`` (import it explicitly; it uses ``vidpress.train``): trainable parameters, the loss, one step, the objective for the shared loop and ``train_pvc``.
The press is ``vidpress.presses.pvc.PVCPress``.
"""

from vidpress.pvc.attach import SUPPORTED_MODEL_TYPES, PVCRun, VisionSeams, attach_pvc, pvc_for_model, vision_seams, vision_tower
from vidpress.pvc.compressor import FrameCompressor, cell_slots, compress_encoded, compress_features, pool_frames, pooling_grid
from vidpress.pvc.images import IMAGE_REPEATS, pvc_image_frames
from vidpress.pvc.io import load_pvc, save_pvc
from vidpress.pvc.model import PVC, PVCConfig
from vidpress.pvc.modules import AdaLNModulation, CausalTemporalAttention, TimeEmbedding, modulate, sinusoidal_embedding

__all__ = [
    "IMAGE_REPEATS",
    "PVC",
    "SUPPORTED_MODEL_TYPES",
    "AdaLNModulation",
    "CausalTemporalAttention",
    "FrameCompressor",
    "PVCConfig",
    "PVCRun",
    "TimeEmbedding",
    "VisionSeams",
    "attach_pvc",
    "cell_slots",
    "compress_encoded",
    "compress_features",
    "load_pvc",
    "modulate",
    "pool_frames",
    "pooling_grid",
    "pvc_for_model",
    "pvc_image_frames",
    "save_pvc",
    "sinusoidal_embedding",
    "vision_seams",
    "vision_tower",
]
