"""The methods' functional cores: pure torch functions on tensors that return what they keep as indices."""

from vidpress.functional.adaretake import chunk_distances, layer_budgets, prompt_guided_scores, temporal_budgets
from vidpress.functional.dedup import downscale_frames, near_duplicate_keep
from vidpress.functional.dpselect import dpselect, dpselect_num_keep, frame_distances, window_peaks
from vidpress.functional.lpcomp import lpcomp_drop_layers, lpcomp_keep_indices, lpcomp_schedule
from vidpress.functional.pivotkv import (
    dynamic_ratio,
    keep_indices_from_scores,
    pivotkv_keep,
    pivotkv_keep_len,
    pivotkv_scores,
    reforge_temporal_ids,
    rotate,
    rotate_half,
    unrotate,
)
from vidpress.functional.qccomp import (
    qccomp_chunks,
    qccomp_clip_scores,
    qccomp_clip_token_slices,
    qccomp_select,
    qccomp_windows,
)
from vidpress.functional.tome import tome_clip_merge, tome_merge_clips, tome_merge_schedule, tome_video
from vidpress.functional.uniform import uniform_indices

__all__ = [
    "chunk_distances",
    "downscale_frames",
    "dpselect",
    "dpselect_num_keep",
    "dynamic_ratio",
    "frame_distances",
    "keep_indices_from_scores",
    "layer_budgets",
    "lpcomp_drop_layers",
    "lpcomp_keep_indices",
    "lpcomp_schedule",
    "near_duplicate_keep",
    "pivotkv_keep",
    "pivotkv_keep_len",
    "pivotkv_scores",
    "prompt_guided_scores",
    "qccomp_chunks",
    "qccomp_clip_scores",
    "qccomp_clip_token_slices",
    "qccomp_select",
    "qccomp_windows",
    "reforge_temporal_ids",
    "rotate",
    "rotate_half",
    "temporal_budgets",
    "tome_clip_merge",
    "tome_merge_clips",
    "tome_merge_schedule",
    "tome_video",
    "uniform_indices",
    "unrotate",
    "window_peaks",
]
