"""vidpress: long-video understanding for Hugging Face VLMs by compressing video tokens.

    from vidpress import VideoQA, presses
    qa = VideoQA.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct")
    answer = qa.ask("video.mp4", "What happens?", press=presses.UniformFramePress(num_frames=64))
"""

from vidpress import functional, presses
from vidpress.pipeline import Answer, AnswerStats, VideoQA
from vidpress.presses import PRESSES, Press
from vidpress.video import Video, VideoError, iter_video_chunks, load_video

__version__ = "0.1.0"

__all__ = [
    "PRESSES",
    "Answer",
    "AnswerStats",
    "Press",
    "Video",
    "VideoError",
    "VideoQA",
    "functional",
    "iter_video_chunks",
    "load_video",
    "presses",
]
