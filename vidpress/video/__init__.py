"""Video input: decode sampled, resized frames of video files, image folders and frame lists."""

from vidpress.video.decode import available_backends
from vidpress.video.load import iter_video_chunks, load_video
from vidpress.video.types import (
    EmptyVideoError,
    FrameRequestError,
    NoVideoStreamError,
    SkippedFramesWarning,
    Video,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
)

__all__ = [
    "EmptyVideoError",
    "FrameRequestError",
    "NoVideoStreamError",
    "SkippedFramesWarning",
    "Video",
    "VideoDecodeError",
    "VideoError",
    "VideoNotFoundError",
    "available_backends",
    "iter_video_chunks",
    "load_video",
]
