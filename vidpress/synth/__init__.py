"""Synthetic long videos with ground-truth multiple-choice questions, for measuring what a video-token press keeps.

A video is a run of scenes (muted backgrounds, drifting or still distractor shapes, hard cuts) with short needle
events (a big saturated shape from a closed set of 8 colours x 4 shapes on black) pasted in at chosen depths.
Tasks: needle, counting, ordering, localisation, multihop (see vidpress.synth.tasks).
"""

from vidpress.synth.export import read_annotations, write_sample, write_suite
from vidpress.synth.grid import needle_grid
from vidpress.synth.needle_metric import needle_kept, needle_tokens_kept
from vidpress.synth.objects import OBJECTS, NeedleObject
from vidpress.synth.sample import SynthSample, make_sample, make_suite, prompt
from vidpress.synth.tasks import TASKS
from vidpress.synth.templates import synth_vocabulary_corpus
from vidpress.synth.video import NeedleEvent, SynthVideo

__all__ = [
    "OBJECTS",
    "TASKS",
    "NeedleEvent",
    "NeedleObject",
    "SynthSample",
    "SynthVideo",
    "make_sample",
    "make_suite",
    "needle_grid",
    "needle_kept",
    "needle_tokens_kept",
    "prompt",
    "read_annotations",
    "synth_vocabulary_corpus",
    "write_sample",
    "write_suite",
]
