"""vidpress as an lmms-eval model: ``lmms-eval --model vidpress --model_args ... --tasks videomme``.

lmms-eval (0.7) finds external models through the Python entry-point group ``lmms_eval.models``; vidpress
declares ``vidpress = "vidpress.lmms_eval_plugin:manifest"`` there, and ``manifest()`` names the model class.
``model_args`` (comma-separated, as lmms-eval parses them):

- ``pretrained``: hub name or local folder (required); ``device``, ``dtype`` as in VideoQA.from_pretrained;
- frames: ``num_frames`` (uniform), or ``fps`` with ``max_frames``; ``max_side`` (long side in pixels);
- presses: ``press=uniform`` (several joined by "+"), ``press_args=num_frames:16`` (``k:v`` pairs joined
  by ";", ``NAME.k:v`` when there are several presses), exactly like ``--press`` / ``--press-arg``;
- ``max_new_tokens``: used when the task's generation_kwargs give none.

Each request must carry one video path (lmms-eval's video tasks do). Decoding is greedy whatever the task
asks. Under ``accelerate launch`` each process holds one replica on its own GPU and lmms-eval splits the
requests. A request whose video cannot be read is answered "" (scored wrong) with a logged warning.
"""

from __future__ import annotations

from typing import Any

import torch
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from loguru import logger
from tqdm.auto import tqdm

from vidpress.pipeline import VideoQA
from vidpress.presses import Press

MODEL_ID = "vidpress"


def manifest() -> ModelManifest:
    """The entry point of group ``lmms_eval.models``: registers VidpressLMMS as model ``vidpress``."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.VidpressLMMS")


def parse_presses(press: str | None, press_args: str | None) -> list[Press]:
    """Presses from ``press="a+b"`` and ``press_args="k:v;b.k:v"`` (model_args values cannot hold commas)."""
    from vidpress.cli_options import build_presses

    names = press.split("+") if press else []
    args = [item.strip().replace(":", "=", 1) for item in (press_args or "").split(";") if item.strip()]
    try:
        return build_presses(names, args)
    except Exception as error:  # typer.BadParameter: report it as a plain argument error
        raise ValueError(f"vidpress press / press_args: {error}") from error


def _cut_at_stops(text: str, until: Any) -> str:
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def _one_video(visuals: Any) -> str:
    """The single video path of a request's visuals; ValueError for images or several videos."""
    items = [v for v in (visuals if isinstance(visuals, list) else [visuals]) if v is not None]
    if len(items) != 1 or not isinstance(items[0], str):
        raise ValueError(f"vidpress needs exactly one video path per request, got {items!r:.200}")
    return items[0]


class VidpressLMMS(lmms):
    """VideoQA with presses behind lmms-eval's ``generate_until`` requests (see the module docstring)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        max_side: int | None = None,
        press: str | None = None,
        press_args: str | None = None,
        max_new_tokens: int = 64,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,  # passed by lmms-eval; requests are answered one at a time
    ) -> None:
        super().__init__()
        if str(batch_size) != "1":
            raise ValueError(f"vidpress answers one request at a time: use --batch_size 1, not {batch_size}")
        from accelerate import PartialState

        state = PartialState()
        self._rank, self._world_size = state.process_index, state.num_processes
        self._device = state.device if device is None or state.num_processes > 1 else torch.device(device)
        self.qa = VideoQA.from_pretrained(str(pretrained), device=self._device, dtype=dtype)
        self.presses = parse_presses(press, press_args)
        self.sampling = {"num_frames": num_frames, "fps": fps, "max_frames": max_frames, "max_side": max_side}
        self.max_new_tokens = int(max_new_tokens)

    @property
    def device(self) -> torch.device:
        return self._device

    def _answer(self, context: str, gen_kwargs: dict[str, Any], video: str) -> str:
        max_new_tokens = int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)
        answer = self.qa.ask(video, context, press=self.presses, max_new_tokens=max_new_tokens, **self.sampling)
        return _cut_at_stops(answer.text, gen_kwargs.get("until"))

    def generate_until(self, requests) -> list[str]:
        """One greedy answer per request ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``."""
        responses = []
        for request in tqdm(requests, desc="vidpress", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            video = _one_video(doc_to_visual(self.task_dict[task][split][doc_id]))
            try:
                responses.append(self._answer(context, gen_kwargs, video))
            except Exception as error:  # one unreadable video must not end the whole evaluation
                logger.warning(f"vidpress: {task} doc {doc_id} failed ({type(error).__name__}: {error}); answering ''")
                responses.append("")
        return responses

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        raise NotImplementedError("vidpress generates answers (generate_until tasks); it does not score continuations")

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("vidpress answers single-round questions")
