"""Any vidpress benchmark's samples (e.g. the synthetic suite) as a local lmms-eval task: a YAML file and its docs.

``write_lmms_task(samples, benchmark, folder)`` writes ``folder/<name>.jsonl`` (one doc per sample: id,
absolute video path, the benchmark's prompt, options, answer letter, category) and ``folder/<name>.yaml`` in
lmms-eval's task format; ``lmms-eval --include_path folder --tasks <name>`` then runs it offline. Scoring uses
vidpress's letter extraction: metric ``accuracy`` (unparseable answers are wrong) and ``unparseable``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidpress.eval.answers import extract_letter
from vidpress.eval.benchmark import Benchmark
from vidpress.eval.records import Sample

_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function vidpress.eval.lmms_task.doc_to_visual
doc_to_text: prompt
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  do_sample: false
process_results: !function vidpress.eval.lmms_task.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
  - metric: unparseable
    aggregation: mean
    higher_is_better: false
metadata:
  version: 0.0
"""


def write_lmms_task(samples: list[Sample], benchmark: Benchmark, folder: str | Path, name: str = "vidpress_synth") -> Path:
    """Write the task ``name`` (YAML and docs) into ``folder``; return the YAML path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    docs = folder / f"{name}.jsonl"
    lines = [
        {"id": s.id, "video": str(Path(s.video).resolve()), "prompt": benchmark.prompt(s), "options": list(s.options),
         "answer": s.answer, "category": ", ".join(s.categories)}
        for s in samples
    ]
    docs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    path = folder / f"{name}.yaml"
    path.write_text(_YAML.format(name=name, docs=json.dumps(str(docs.resolve())), max_new_tokens=benchmark.max_new_tokens))
    return path


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """The doc's video, as a one-element list of paths (lmms-eval's video convention)."""
    return [doc["video"]]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Score the generated answer ``results[0]``: accuracy 1/0 and whether it named no option."""
    letter = extract_letter(results[0], doc["options"])
    return {"accuracy": float(letter is not None and letter == doc["answer"]), "unparseable": float(letter is None)}
