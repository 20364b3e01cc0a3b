"""Evaluation: benchmark loaders on hand-written official-format files, letter extraction, metrics, the
resumable runner (end to end on a tiny checkpoint, kill and resume, a bad video), shard merging, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vidpress.eval import BENCHMARKS, Process, extract_letter, load_task, merge_shards, run_shard, summarize
from vidpress.eval.journal import Journal, read_records
from vidpress.eval.runner import EvalRun
from vidpress.eval_cli import eval_command, plot_command
from vidpress.pipeline import Answer, AnswerStats
from vidpress.synth import make_sample, make_suite, prompt, write_suite

cli = typer.Typer()
cli.command("eval")(eval_command)
cli.command("plot")(plot_command)
runner = CliRunner()


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# -- loaders: small files in each benchmark's official format ------------------------------------------------
CHOICES = ["A. x", "B. y", "C. z", "D. w"]


def test_videomme_flat_rows_and_official_nested_json(tmp_path):
    video = touch(tmp_path / "data" / "fFjv93ACGo8.mp4")
    rows = [{
        "video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
        "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
        "task_type": "Counting Problem", "question": "How many porcelain jars were discovered?",
        "options": ["A. 4.", "B. 9.", "C. 5.", "D. 13."], "answer": "B",
    }]
    benchmark, (sample,) = load_task("videomme", write_json(tmp_path / "videomme" / "test.json", rows), tmp_path / "data", tmp_path)
    assert (sample.id, sample.options, sample.answer, sample.video) == ("001-1", ("4.", "9.", "5.", "13."), "B", str(video))
    assert sample.categories == ("Counting Problem",) and sample.duration_group == "short"
    assert benchmark.prompt(sample) == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only the "
        "letter (A, B, C, or D) of the correct option.\nHow many porcelain jars were discovered?\nA. 4.\nB. 9.\nC. 5.\n"
        "D. 13.\nThe best answer is:"
    )
    nested = [{
        "video_id": "001", "duration_category": "long", "video_category": "Knowledge", "video_subcategory": "Law",
        "url": "https://www.youtube.com/watch?v=fFjv93ACGo8",
        "questions": [
            {"question_id": "001-1", "task_type": "OCR Problems", "question": "q1?", "choices": CHOICES, "answer": "D"},
            {"question_id": "001-2", "task_type": "Object Reasoning", "question": "q2?", "choices": CHOICES, "answer": "A"},
        ],
    }]
    _, samples = load_task("videomme", write_json(tmp_path / "nested.json", nested), tmp_path / "data", tmp_path)
    assert [(s.id, s.answer, s.duration_group) for s in samples] == [("001-1", "D", "long"), ("001-2", "A", "long")]
    assert {s.video for s in samples} == {str(video)} and samples[1].options == ("x", "y", "z", "w")
    assert samples[0].extra["sub_category"] == "Law"


def test_videomme_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    row = {"video_id": "002", "duration": "medium", "domain": "Sports Competition", "sub_category": "Football", "url": "",
           "videoID": "abcdefghijk", "question_id": "002-3", "task_type": "Action Recognition", "question": "Who scores?",
           "options": ["A. a", "B. b", "C. c", "D. d"], "answer": "C"}
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pyarrow.Table.from_pylist([row]), path)
    _, (sample,) = load_task("videomme", path, tmp_path, tmp_path)
    assert (sample.id, sample.answer, sample.duration_group) == ("002-3", "C", "medium")


def test_mlvu_dev_folder_and_test_file(tmp_path):
    root = tmp_path / "MLVU"
    plot = touch(root / "video" / "1_plotQA" / "movie101_66.mp4")
    needle = touch(root / "video" / "needle" / "needle_32.mp4")  # another layout: found through the index
    write_json(root / "json" / "1_plotQA.json", [
        {"video": "movie101_66.mp4", "duration": 246, "question": "What color is the main male character in the video?",
         "candidates": ["Yellow", "Red", "Green", "Blue"], "answer": "Yellow", "question_type": "plotQA"},
    ])
    write_json(root / "json" / "2_needle.json", [
        {"video": "needle_32.mp4", "duration": 467.98, "question": "What does the hand do?",
         "candidates": ["Delivers a product", "Shakes hands"], "answer": "Shakes hands", "question_type": "findNeedle"},
    ])
    summary_task = [{"video": "s.mp4", "question": "Summarise.", "answer": "...", "question_type": "summary"}]  # no candidates: skipped
    write_json(root / "json" / "9_summary.json", summary_task)
    benchmark, samples = load_task("mlvu-dev", root, None, tmp_path)
    assert [(s.id, s.answer, s.categories, s.video) for s in samples] == [
        ("1_plotQA/0", "A", ("plotQA",), str(plot)), ("2_needle/0", "B", ("findNeedle",), str(needle))]
    assert benchmark.headline == "macro_accuracy"
    assert benchmark.prompt(samples[1]) == (
        "Carefully watch this video and pay attention to every detail. Based on your observations, select the best "
        "option that accurately addresses the question.\nQuestion: What does the hand do?\nOptions:\n"
        "(A) Delivers a product\n(B) Shakes hands\nOnly give the best option.\nBest option: ("
    )
    test_file = write_json(tmp_path / "MLVU_Test" / "test_question.json", [
        {"question_id": "AR_0", "question_type": "anomaly_reco", "video": "test_1.mp4", "question": "Anything odd?",
         "candidates": ["a", "b", "c", "d", "e", "f"]},
    ])
    _, (sample,) = load_task("mlvu-test", test_file, None, tmp_path)
    assert (sample.id, sample.answer, sample.letters, sample.benchmark) == ("AR_0", None, "ABCDEF", "mlvu-test")


def test_lvbench_meta_jsonl(tmp_path):
    video = touch(tmp_path / "videos" / "Cm73ma6Ibcs.mp4")
    line = {"key": "Cm73ma6Ibcs", "type": "sport", "video_info": {"duration_minutes": 80.5}, "qa": [
        {"uid": 42, "question": "What year appears in the opening caption?\n(A) 2009\n(B) 2010\n(C) 2011\n(D) 2012",
         "answer": "B", "question_type": ["key information retrieval", "entity recognition"], "time_reference": "00:15-00:19"}]}
    path = tmp_path / "video_info.meta.jsonl"
    path.write_text(json.dumps(line) + "\n")
    benchmark, (sample,) = load_task("lvbench", path, tmp_path / "videos", tmp_path)
    assert (sample.id, sample.options, sample.answer, sample.video) == ("42", ("2009", "2010", "2011", "2012"), "B", str(video))
    assert sample.categories == ("key information retrieval", "entity recognition") and sample.duration_group is None
    assert benchmark.prompt(sample) == line["qa"][0]["question"] + "\nAnswer the question with the option letter"


def test_longvideobench_json_and_parquet_style_rows(tmp_path):
    video = touch(tmp_path / "videos" / "86CxyhFV9MI.mp4")
    rows = [{"video_id": "86CxyhFV9MI", "question": "In the video, which subtitles appear with the man on stage?",
             "question_wo_referring_query": "Which subtitles appear?", "candidates": ["hello there", "goodbye", "thank you"],
             "correct_choice": 2, "position": [120], "topic_category": "NP-News-Programs", "question_category": "S2E",
             "level": "L1-Perception", "id": "86CxyhFV9MI_0", "video_path": "86CxyhFV9MI.mp4",
             "subtitle_path": "86CxyhFV9MI_en.json", "duration_group": 600, "starting_timestamp_for_subtitles": 0, "duration": 512.3}]
    benchmark, (sample,) = load_task("longvideobench", write_json(tmp_path / "lvb_val.json", rows), None, tmp_path)
    assert (sample.id, sample.answer, sample.categories, sample.duration_group, sample.video) == (
        "86CxyhFV9MI_0", "C", ("S2E",), "600", str(video))
    assert benchmark.prompt(sample) == (
        "In the video, which subtitles appear with the man on stage?\nA. hello there\nB. goodbye\nC. thank you\n"
        "Answer with the option's letter from the given choices directly.\n"
    )
    hf_row = {k: v for k, v in rows[0].items() if k not in ("candidates", "correct_choice")}
    hf_row |= {"option0": "x", "option1": "y", "option2": "N/A", "option3": "N/A", "option4": "N/A"}
    _, (test_sample,) = load_task("longvideobench", write_json(tmp_path / "lvb_test_wo_gt.json", [hf_row]), None, tmp_path)
    assert test_sample.options == ("x", "y") and test_sample.answer is None


def test_synth_suite_prompt_is_the_suite_prompt_and_missing_videos_keep_a_path(tmp_path):
    samples = make_suite(["needle", "ordering"], [48], 1, seed=3, height=32, width=32)
    write_suite(samples, tmp_path / "suite")
    benchmark, loaded = load_task("synth", tmp_path / "suite", None, tmp_path)
    assert [benchmark.prompt(s) for s in loaded] == [prompt(s) for s in samples]
    assert [s.answer for s in loaded] == [s.answer for s in samples] and all(Path(s.video).is_file() for s in loaded)
    (tmp_path / "suite" / "videos" / f"{samples[0].name}.mp4").unlink()
    _, loaded = load_task("synth", tmp_path / "suite", None, tmp_path)
    assert loaded[0].video.endswith(f"{samples[0].name}.mp4") and not Path(loaded[0].video).exists()
    with pytest.raises(ValueError, match="unknown task"):
        load_task("videomm", None, None, tmp_path)
    with pytest.raises(ValueError, match="needs --data"):
        load_task("videomme", None, None, tmp_path)
    assert set(BENCHMARKS) == {"videomme", "mlvu-dev", "mlvu-test", "lvbench", "longvideobench", "synth"}


# -- letters and metrics --------------------------------------------------------------------------------------
OPTIONS = ["cat", "dog", "red circle", "blue square"]


@pytest.mark.parametrize("text, letter", [
    ("The answer is (B).", "B"), ("B", "B"), ("b) cat", "B"), ("Answer: C. dog", "C"), ("(D)", "D"), ("[C]", "C"),
    ("Best option: (A) cat", "A"), ("The correct answer is D", "D"), ("C.\nBecause the circle is red.", "C"),
    ("dog", "B"), ("It is a red circle.", "C"), ("A dog runs across.", "B"), ("I think B is right", "B"),
    ("The answer is a dog", "B"),
    ("garbage ~~ 123", None), ("", None), ("a cat and a dog", None), ("E", None), ("I am not sure", None),
])
def test_extract_letter(text, letter):
    assert extract_letter(text, OPTIONS) == letter


def record(sample_id, categories, correct, *, letter="A", duration=None, error=None):
    return {"id": sample_id, "index": 0, "categories": categories, "duration_group": duration, "answer": "A",
            "letter": None if error else letter, "correct": None if error else correct, "error": error}


def test_metrics_macro_mean_failures_and_unparseable():
    records = [
        record("1", ["plotQA"], True, duration="short"), record("2", ["plotQA"], True, duration="short"),
        record("3", ["plotQA"], False, letter=None, duration="long"), record("4", ["count"], False, duration="long"),
        record("5", ["count", "ego"], False, error="VideoDecodeError: bad file", duration="long"),
    ]
    summary = summarize(records)
    assert summary["accuracy"] == pytest.approx(2 / 5)
    assert summary["accuracy_parsed"] == pytest.approx(2 / 3)
    assert summary["per_category"]["plotQA"]["accuracy"] == pytest.approx(2 / 3)
    assert summary["per_category"]["count"] == {"n": 2, "correct": 0, "accuracy": 0.0}
    assert summary["macro_accuracy"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert summary["per_duration"]["short"]["accuracy"] == 1.0 and summary["per_duration"]["long"]["n"] == 3
    assert (summary["failed"], summary["unparseable"], summary["failures"]) == (1, 1, {"5": "VideoDecodeError: bad file"})


# -- the runner -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """Four synthetic questions on 48-frame 32x32 videos; the third video is corrupt."""
    folder = tmp_path_factory.mktemp("suite")
    samples = make_suite(["needle", "ordering"], [48], 2, seed=0, height=32, width=32)
    write_suite(samples, folder)
    (folder / "videos" / f"{samples[2].name}.mp4").write_bytes(b"not a video")
    return folder


def eval_args(model: Path, suite: Path, output: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(model), "--task", "synth", "--data", str(suite), "--output", str(output), "--frames", "4",
            "--press", "uniform", "--press-arg", "num_frames=2", "--max-new-tokens", "2", "--device", "cpu", *extra]


def test_runner_end_to_end_resume_after_kill_and_bad_video(tiny_checkpoints, suite, tmp_path):
    model, output = tiny_checkpoints["qwen2_vl"], tmp_path / "run"
    first = runner.invoke(cli, eval_args(model, suite, output, "--limit", "2"))
    assert first.exit_code == 0, first.output
    assert [r["index"] for r in read_records(output / "predictions.jsonl")] == [0, 1]
    with (output / "predictions.jsonl").open("a") as file:  # a kill in the middle of the third record
        file.write('{"id": "needle_00048f_d0.1')
    second = runner.invoke(cli, eval_args(model, suite, output))
    assert second.exit_code == 0, second.output
    records = read_records(output / "predictions.jsonl")
    assert [r["index"] for r in records] == [0, 1, 2, 3] and len({r["id"] for r in records}) == 4
    assert (output / "predictions.jsonl").read_text().endswith("}\n")
    assert records[2]["error"].startswith("VideoDecodeError") and all(r["error"] is None for r in records[:2] + records[3:])
    assert records[0]["stats"]["frames_sampled"] == 4 and records[0]["stats"]["frames_kept"] == 2
    assert all(r["needle_kept"] in (0.0, 0.5, 1.0) for r in records if not r["error"])
    summary = json.loads((output / "summary.json").read_text())
    assert (summary["samples"], summary["expected"], summary["failed"], summary["answered"]) == (4, 4, 1, 3)
    assert summary["settings"]["presses"] == [{"name": "uniform", "class": "UniformFramePress", "params": {"num_frames": 2}}]
    assert "unparseable answers" in second.output and "per category" in second.output
    mismatch = runner.invoke(cli, eval_args(model, suite, output, "--frames", "6"))
    assert mismatch.exit_code == 2 and "other settings" in mismatch.output and "sampling" in mismatch.output


class ScriptedQA:
    """A stand-in VideoQA answering each question's correct letter, and stopping (like a kill) when told."""

    def __init__(self, answers: dict[str, str], stop_after: int | None = None):
        self.answers, self.stop_after, self.asked = answers, stop_after, []

    def ask(self, video, question, **kwargs) -> Answer:
        if self.stop_after is not None and len(self.asked) == self.stop_after:
            raise KeyboardInterrupt
        self.asked.append(video)
        return Answer(self.answers[video], [], AnswerStats(frames_sampled=4, frames_kept=4))


def test_shards_of_two_simulated_processes_merge_once_each(suite, tmp_path):
    benchmark, samples = load_task("synth", suite, None, tmp_path)
    answers = {s.video: f"The answer is ({s.answer})." for s in samples}
    run = EvalRun("scripted", "synth", tmp_path / "run")
    second = ScriptedQA(answers)
    assert run_shard(second, benchmark, samples, run, Process(1, 2), progress=False) == 2
    with pytest.raises(KeyboardInterrupt):  # the main process is killed after one answer ...
        run_shard(ScriptedQA(answers, stop_after=1), benchmark, samples, run, Process(0, 2), progress=False)
    with (tmp_path / "run" / "predictions.rank0of2.jsonl").open("a") as file:
        file.write('{"id": "cut')  # ... while writing its second
    resumed = ScriptedQA(answers)
    assert run_shard(resumed, benchmark, samples, run, Process(0, 2), progress=False) == 1
    assert resumed.asked == [samples[2].video] and second.asked == [samples[1].video, samples[3].video]
    records = merge_shards(tmp_path / "run")
    assert [r["id"] for r in records] == [s.id for s in samples]
    assert not list((tmp_path / "run").glob("predictions.rank*")) and len(read_records(tmp_path / "run" / "predictions.jsonl")) == 4
    assert summarize(records)["accuracy"] == 1.0 and summarize(records)["needle_kept"] == 0.0  # no frame kept
    assert run_shard(ScriptedQA(answers), benchmark, samples, run, Process(), progress=False) == 0  # one process resumes: all done


def test_journal_refuses_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_records(path)
    with Journal(tmp_path / "q.jsonl") as journal:
        journal.append({"id": 1})
    assert read_records(tmp_path / "q.jsonl") == [{"id": 1}]


def fake_summary(press: str, frames: float, tokens: float, accuracy: float, grid: list | None = None) -> dict:
    return {"task": "synth", "headline": "accuracy", "accuracy": accuracy,
            "efficiency": {"frames_kept": frames, "visual_tokens_after": tokens},
            "settings": {"presses": [{"name": press, "class": "X", "params": {}}] if press else []}, "needle_grid": grid or []}


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    grid = [{"num_frames": n, "depth": d, "n": 1, "correct": 1, "accuracy": float(n > 32), "needle_kept": 1.0}
            for n in (32, 64) for d in (0.0, 0.5, 1.0)]
    runs = []
    summaries = [fake_summary("uniform", 8, 64, 0.3), fake_summary("uniform", 16, 128, 0.5), fake_summary("", 32, 256, 0.6, grid)]
    for i, summary in enumerate(summaries):
        runs.append(write_json(tmp_path / f"run{i}" / "summary.json", summary).parent)
    result = runner.invoke(cli, ["plot", *map(str, runs), "--output", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert written == ["accuracy_vs_frames.png", "accuracy_vs_visual_tokens.png", "needle_heatmap_run2.png"]
    assert all((tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG" for name in written)


def test_generated_grid_task_names(tmp_path, monkeypatch):
    import vidpress.eval.synth as synth

    def small_grid(lengths, depths, seed):  # two depths of 32x32 frames: the same lengths, less to write
        return [make_sample("needle", n, depth=d, seed=seed, height=32, width=32) for n in lengths for d in depths[:2]]

    monkeypatch.setattr(synth, "needle_grid", small_grid)
    benchmark, samples = load_task("synth-grid-128", None, None, tmp_path)
    assert sorted({s.extra["num_frames"] for s in samples}) == [16, 32, 64, 128]
    assert (tmp_path / "data" / "annotations.jsonl").is_file() and benchmark.name == "synth"


def test_compile_vision_reaches_the_model(suite, tmp_path, monkeypatch):
    loaded = {}

    def from_pretrained(name, **kwargs):
        loaded.update(kwargs)
        raise ValueError("stop after loading")

    monkeypatch.setattr("vidpress.pipeline.VideoQA.from_pretrained", from_pretrained)
    result = runner.invoke(cli, eval_args(tmp_path / "model", suite, tmp_path / "run", "--compile-vision"))
    assert result.exit_code == 2 and "stop after loading" in result.output
    assert loaded["compile_vision"] is True
