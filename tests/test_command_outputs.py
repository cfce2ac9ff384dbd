"""Each command writes through the output seam (``defr.files.OutputSet``, tested in ``test_outputs.py``):
a brief check per command that its outputs are declared with its inputs and written as one set.
Issue 28 items 1-4 and 10; each test fails on the code before the seam."""

from __future__ import annotations

import errno
import json
import os

import pytest
from click.testing import CliRunner

from defr.cli import main


def _run(args: list[str], code: int = 1) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def _snapshot(*paths) -> dict:
    return {p: p.read_bytes() for p in paths}


def _no_staging(folder) -> bool:
    return not list(folder.glob(".*.defr-*"))


# --- item 1: an output that is an input -----------------------------------------------------------------


@pytest.fixture
def detect_case(tmp_path):
    """images/ (two PNGs), a per-image detections folder, a JSONL, an image list and a checkpoint file."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "dets").mkdir()
    lines = []
    for i in range(2):
        Image.new("RGB", (50, 40), (30 * i, 0, 0)).save(tmp_path / "images" / f"{i}.png")
        det = {"boxes": [[0, 0, 20, 30]], "labels": [1], "scores": [0.9]}
        (tmp_path / "dets" / f"{i}.json").write_text(json.dumps(det))
        lines.append(json.dumps({"filename": f"{i}.png", **det}))
    (tmp_path / "dets.jsonl").write_text("\n".join(lines))
    (tmp_path / "list.txt").write_text("images/0.png\nimages/1.png\n")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    return tmp_path


@pytest.mark.parametrize("out", ["dets.jsonl", "dets/1.json", "images/0.png", "model.safetensors", "list.txt"])
def test_detect_refuses_an_output_that_is_one_of_its_inputs(detect_case, out):
    d = detect_case
    inputs = [d / "dets.jsonl", d / "dets" / "1.json", d / "images" / "0.png", d / "model.safetensors", d / "list.txt"]
    before = _snapshot(*inputs)
    images = d / ("list.txt" if out == "list.txt" else "images")
    dets = d / ("dets" if out.startswith("dets/") else "dets.jsonl")
    args = ["detect", "--checkpoint", d / "model.safetensors", "--images", images, "--detections", dets]
    output = _run([*args, "--out", d / out])
    assert "is the input" in output and "writing it would destroy the input" in output
    assert _snapshot(*inputs) == before


def test_detect_ray_refuses_its_input_as_out_before_ray_starts(detect_case):
    d = detect_case
    args = ["detect", "--checkpoint", d / "model.safetensors", "--images", d / "images", "--detections",
            d / "dets.jsonl", "--ray", "local", "--out", d / "dets.jsonl"]  # fmt: skip
    before = _snapshot(d / "dets.jsonl")
    assert "is the input" in _run(args) and _snapshot(d / "dets.jsonl") == before


@pytest.mark.slow  # imports Ray (starts none)
def test_video_ray_outputs_are_sets_refused_before_ray_starts(tmp_path):
    ray = pytest.importorskip("ray")
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.mp4").write_bytes(b"not read: refused first")
    (clips / "a.frames.jsonl").write_text("the detections, under the name of an output")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    base = ["video", clips, "--checkpoint", tmp_path / "model.safetensors", "--no-progress", "--ray", "local"]
    spec = ["--detector", f"detections:{clips}/{{stem}}.frames.jsonl"]
    assert "is the input" in _run([*base, *spec, "--frames", clips])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.summary.json").write_text("my notes")  # named as defr would name a's summary, not defr's
    output = _run([*base, "--detector", f"detections:{clips}/{{stem}}.jsonl", "--frames", out])
    assert "a.summary.json" in output and "not written by defr" in output and "--overwrite" in output
    assert (clips / "a.frames.jsonl").read_text().startswith("the detections") and not ray.is_initialized()
    assert [p.name for p in out.iterdir()] == ["a.summary.json"]  # nothing staged, nothing taken


def test_detect_refuses_a_second_writer_of_its_output(detect_case):
    from defr.files import OutputSet

    d = detect_case
    out = d / "results.json"
    args = ["detect", "--checkpoint", d / "model.safetensors", "--images", d / "images", "--detections",
            d / "dets.jsonl", "--out", out]  # fmt: skip
    with OutputSet({"--out": out}):  # another defr process writing the same file
        assert f"being written by another defr process (pid {os.getpid()})" in _run(args)


@pytest.mark.parametrize("kind", ["/dev/null", "fifo"])
def test_detect_refuses_a_device_or_fifo_as_out(detect_case, kind):
    d = detect_case
    out = os.devnull if kind == "/dev/null" else d / "fifo"
    if kind == "fifo":
        os.mkfifo(out)
    args = ["detect", "--checkpoint", d / "model.safetensors", "--images", d / "images", "--detections",
            d / "dets.jsonl", "--out", out]  # fmt: skip
    assert "not a regular file" in _run(args)
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)


def test_evaluate_commands_refuse_their_input_as_json(tmp_path):
    results, annotations = tmp_path / "results.json", tmp_path / "anno.json"
    results.write_text("{}")
    annotations.write_text("{}")
    args = ["eval-hicodet", "--annotations", annotations, "--results", results, "--json", results]
    assert "is the input" in _run(args) and results.read_text() == "{}"
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    args = ["evaluate", "--checkpoint", ckpt, "--dataset", "synth", "--data-root", tmp_path, "--json", ckpt]
    assert "is the input" in _run(args) and ckpt.read_bytes() == b"weights"


def test_text_commands_refuse_their_input_as_out(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("ride bicycle\n")
    assert "is the input" in _run(["embed-labels", "--encoder", "minilm", "--classes", classes, "--out", classes])
    emb = tmp_path / "emb.safetensors"
    emb.write_bytes(b"embeddings")
    assert "is the input" in _run(["plot-embeddings", "--embeddings", emb, "--out", emb])
    assert classes.read_text() == "ride bicycle\n" and emb.read_bytes() == b"embeddings"


def test_export_refuses_a_fifo_among_its_files(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "model.onnx")
    from defr.export.cli import main as export_main

    result = CliRunner().invoke(export_main, [str(ckpt), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "model.onnx is a FIFO (named pipe), not a regular file" in result.output


def test_export_writes_its_folder_through_the_seam(tmp_path):
    """OUT_DIR is a Folder output: a checkpoint among the files it writes, and a folder another live export
    is writing, are refused before any work."""
    from defr.export.cli import main as export_main
    from defr.files import Folder, OutputSet

    out = tmp_path / "out"
    out.mkdir()
    (out / "model.json").write_bytes(b"weights")  # a checkpoint saved under a name the export writes
    result = CliRunner().invoke(export_main, [str(out / "model.json"), "-o", str(out)])
    assert result.exit_code == 2 and "holds the input" in result.output
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with OutputSet({"--out-dir": Folder(out, guard=False)}):  # another export, still running
        result = CliRunner().invoke(export_main, [str(tmp_path / "model.safetensors"), "-o", str(out)])
    assert result.exit_code == 2 and "being written by another defr process" in result.output
    assert (out / "model.json").read_bytes() == b"weights"


# --- item 3: a default-named output that defr did not write ---------------------------------------------


def test_video_refuses_an_existing_summary_it_did_not_write_and_a_video_named_like_text(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "res.summary.json").write_text("my notes")
    (tmp_path / "notes.txt").write_text("my notes")
    base = ["video", tmp_path / "in.mp4", "--checkpoint", tmp_path / "model.safetensors", "--no-progress"]
    output = _run([*base, "--frames", tmp_path / "res.jsonl"])
    assert "res.summary.json" in output and "not written by defr" in output and "--overwrite" in output
    assert "not a video file name" in _run([*base, "--out", tmp_path / "notes.txt"])
    assert (tmp_path / "res.summary.json").read_text() == "my notes" and (
        tmp_path / "notes.txt"
    ).read_text() == "my notes"
    assert not (tmp_path / "res.jsonl").exists()


def test_bench_refuses_an_existing_bench_json_it_did_not_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.json").write_text("my results")
    assert "not written by defr" in _run(["bench", "--model", "tiny-vit", "--image-size", "32"])
    assert (tmp_path / "bench.json").read_text() == "my results"


# --- items 3 and 4: synth --video writes its three files as one set --------------------------------------


@pytest.mark.slow
def test_synth_video_is_one_set_and_refuses_an_events_file_it_did_not_write(tmp_path, monkeypatch):
    import defr.data.synth.video as synth_video

    video = tmp_path / "clip.mp4"
    (tmp_path / "clip.events.jsonl").write_text("my events\n")
    args = ["synth", "--video", video, "--frames", "10", "--size", "64"]
    assert "clip.events.jsonl" in _run(args) and "not written by defr" in _run(args)
    assert (tmp_path / "clip.events.jsonl").read_text() == "my events\n" and not video.exists()
    _run([*args, "--overwrite"], code=0)
    old = _snapshot(video, tmp_path / "clip.detections.jsonl", tmp_path / "clip.events.jsonl")

    def killed(*a, **k):
        raise KeyboardInterrupt  # after the video and the detections were written

    monkeypatch.setattr(synth_video, "gt_events", killed)
    CliRunner().invoke(main, [str(a) for a in [*args[:3], "--frames", "12", "--size", "64"]])
    assert _snapshot(*old) == old and _no_staging(tmp_path)  # the old set, whole


# --- items 4 and 10: eval-events and box-noise swap their files in together ------------------------------


def _eval_events_args(tmp_path) -> list:
    for name in ("f.jsonl", "e.jsonl", "td.jsonl", "te.jsonl"):
        (tmp_path / name).write_text("")
    files = dict(
        zip(("--frames", "--events", "--truth-detections", "--events-truth"), ("f", "e", "td", "te"), strict=True)
    )
    return [
        "eval-events",
        *[x for k, v in files.items() for x in (k, tmp_path / f"{v}.jsonl")],
        "--out",
        tmp_path / "o",
    ]


def test_eval_events_on_a_full_disk_leaves_the_previous_set_whole(tmp_path, monkeypatch):
    import defr.commands.events as events

    report = {"table": [], "events": {}, "events_any_track": {}, "false_events": {}}
    for reader in ("read_frame_lines", "read_truth_lines"):
        monkeypatch.setattr(events, reader, lambda *a: [])
    monkeypatch.setattr(events, "read_events", lambda *a, **k: [])
    monkeypatch.setattr(events, "evaluate_run", lambda *a, **k: report)
    monkeypatch.setattr(events, "track_identity", lambda *a: {})
    monkeypatch.setattr(events, "in_truth_ids", lambda *a: [])

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(events, "plot_timeline", full_disk)
    args = _eval_events_args(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    (out / "events_eval.json").write_text("mine")
    assert "not written by defr" in _run(args) and (out / "events_eval.json").read_text() == "mine"
    output = _run([*args, "--overwrite"])
    assert "No space left on device" in output and "nothing half-written" in output
    assert (out / "events_eval.json").read_text() == "mine" and not (out / "events_table.md").exists()
    assert _no_staging(out)


def test_box_noise_replaces_its_json_and_plot_together(tmp_path, monkeypatch):
    import defr.commands.detect as detect

    class Detector:
        backend = type("Backend", (), {"mask_mode": "hard"})

        @classmethod
        def from_checkpoint(cls, *a, **k):
            return cls()

    row = {"ratio": 0.0, "full": 0.5, "rare": 0.5, "non_rare": 0.5}
    monkeypatch.setattr(detect, "HOIDetector", Detector)
    monkeypatch.setattr(detect, "box_noise_study", lambda *a, **k: [row])

    def plot_fails(*a, **k):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(detect, "plot_box_noise", plot_fails)
    for name in ("c.safetensors", "a.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "images").mkdir()
    out = tmp_path / "out"
    args = ["box-noise", "--checkpoint", tmp_path / "c.safetensors", "--annotations", tmp_path / "a.json",
            "--images", tmp_path / "images", "--out", out, "--ratios", "0"]  # fmt: skip
    out.mkdir()
    (out / "box_noise.json").write_text("old")
    (out / "box_noise.png").write_text("old plot")
    assert "not written by defr" in _run(args)
    with pytest.raises(RuntimeError, match="the plot failed"):
        CliRunner().invoke(main, [str(a) for a in [*args, "--overwrite"]], catch_exceptions=False)
    assert (out / "box_noise.json").read_text() == "old" and (out / "box_noise.png").read_text() == "old plot"
    assert _no_staging(out)


def test_train_refuses_a_run_file_that_is_its_config_or_a_device(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = run / "metrics.jsonl"  # the config given is the file the run would rewrite
    config.write_text("epochs: 1\n")
    assert "is the input" in _run(["train", "--config", config, "--output", run])
    assert config.read_text() == "epochs: 1\n"
    os.symlink(os.devnull, tmp_path / "run" / "model.safetensors")
    assert "character device" in _run(["train", "--dataset", "synth", "--output", run])
