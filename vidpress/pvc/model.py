"""The PVC add-on: its configuration and the module holding every added parameter."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from vidpress.pvc.compressor import FrameCompressor
from vidpress.pvc.modules import AdaLNModulation, CausalTemporalAttention, TimeEmbedding


@dataclass
class PVCConfig:
    """Sizes of the PVC add-on (https://arxiv.org/abs/2412.09613).

    Parameters
    ----------
    vision_width, vision_heads : width C and attention heads of the vision tower's blocks.
    llm_width, llm_heads : width D of the merged visual tokens (the LLM's hidden size) and the compressor's heads.
    layers : L, the last L blocks of the tower get temporal attention and AdaLN (the paper leaves L open).
    frequency_dim : size of the sinusoidal time embedding (256 in the paper).
    window : None (the paper), or the temporal units each unit's temporal attention sees, itself included:
        a sliding window, not in the paper, that bounds the state carried across chunked encoding to the
        last ``window - 1`` units (memory O(window) instead of O(video length)). Each layer looks
        ``window - 1`` units back, so through the L layers a unit's output depends on L (window - 1) earlier units.
    """

    vision_width: int
    vision_heads: int
    llm_width: int
    llm_heads: int
    layers: int = 4
    frequency_dim: int = 256
    window: int | None = None

    def __post_init__(self) -> None:
        for name in ("vision_width", "vision_heads", "llm_width", "llm_heads", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1 or None, got {self.window}")
        if self.frequency_dim < 2 or self.frequency_dim % 2:
            raise ValueError(f"frequency_dim must be even and >= 2, got {self.frequency_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


class PVC(nn.Module):
    """Every parameter PVC adds to a VLM.

    Attributes
    ----------
    time_embedding : relative time → [U, C] (shared by the layers).
    modulation : per added layer, AdaLN shift/scale of the block's two normalisations.
    temporal : per added layer, the causal temporal attention branch run after the block.
    compressor : the per-frame token compressor on the merged tokens.
    merger : None, or a trained copy of the tower's merger (projector) used instead of the tower's own.
    """

    def __init__(self, config: PVCConfig):
        super().__init__()
        self.config = config
        self.time_embedding = TimeEmbedding(config.vision_width, config.frequency_dim)
        self.modulation = nn.ModuleList(AdaLNModulation(config.vision_width) for _ in range(config.layers))
        self.temporal = nn.ModuleList(
            CausalTemporalAttention(config.vision_width, config.vision_heads) for _ in range(config.layers)
        )
        self.compressor = FrameCompressor(config.llm_width, config.llm_heads)
        self.merger: nn.Module | None = None
