"""PVC on vidpress-tiny: the trained add-on at k tokens per temporal unit vs plain pooling to k tokens.

    python scripts/pvc_demo.py --output runs/pvc-demo     # defaults sized for about 3-4 minutes on one GPU and 16 cores

vidpress-tiny has 16 visual tokens (4 x 4) per temporal unit of 2 frames; k = 4 (2 x 2 cells) is a 4x cut,
the ratio of the paper's 64 tokens per frame against the 256 of a 448 px InternVL2 image.

1. writes the synthetic training and held-out sets (the data writer of ``scripts/sct_demo.py``);
2. trains the PVC add-on on the frozen model (``vidpress.pvc.training.train_pvc``, as ``vidpress train pvc``);
3. evaluates on the held-out questions: no press (16 tokens per unit), an untrained ``PVCPress`` (its
   zero-initialised temporal attention, AdaLN and compressor gate make it the stock tower followed by
   adaptive average pooling: plain pooling to k tokens, each at the position of a token of its cell) and the
   trained ``PVCPress``.

``report.json`` and ``report.md`` in ``--output`` hold the loss curve and the accuracy per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# scripts/ is on sys.path when this file runs as a script
from sct_demo import UNIT_TOKENS, demo_parser, evaluate, load_qa, loss_summary, prepare_data, settings, timed, train_settings, write_report

from vidpress.presses import PVCPress
from vidpress.pvc.training import PVCTrainConfig, train_pvc

TOKENS_PER_UNIT = 4  # k: 2 x 2 pooled cells of vidpress-tiny's 4 x 4 tokens per unit (paper: 64 of 256)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = demo_parser(__doc__, output="runs/pvc-demo", lr=1e-3).parse_args(argv)
    seconds: dict[str, float] = {}
    with timed(seconds, "data"):
        data, held_out, videos = prepare_data(args)
    with timed(seconds, "train"):
        addon = train_pvc(PVCTrainConfig(output=str(args.output / "pvc"), tokens_per_frame=TOKENS_PER_UNIT, **train_settings(args, data)))
    with timed(seconds, "eval"):
        presses = {"none": None, "pooling": PVCPress(TOKENS_PER_UNIT), "pvc": PVCPress(TOKENS_PER_UNIT, checkpoint=str(addon))}
        accuracy = evaluate(load_qa(args.model, args.device), held_out, videos, presses)

    report = {
        "demo": "pvc",
        "model": args.model,
        "addon": str(addon),
        "settings": settings(args),
        "tokens_per_unit": {"none": UNIT_TOKENS, "pooling": TOKENS_PER_UNIT, "pvc": TOKENS_PER_UNIT},
        "training": loss_summary(addon),
        "accuracy": accuracy,
        "seconds": seconds | {"total": round(sum(seconds.values()), 1)},
    }
    notes = [
        f"Columns: none = no press ({UNIT_TOKENS} tokens per unit); pooling = untrained PVCPress, plain average pooling to "
        f"{TOKENS_PER_UNIT} tokens per unit; pvc = the trained add-on (frozen model) at {TOKENS_PER_UNIT} tokens per unit.",
    ]
    write_report(args.output, report, f"PVC demo: {TOKENS_PER_UNIT} tokens per unit, trained add-on vs plain pooling", notes)
    return report


if __name__ == "__main__":
    main()
