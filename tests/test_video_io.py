"""Sources, writers and run_video: video files, bad input, interruption, the ``defr video`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from videokit import Oracle, frames, tiny_hoi

from defr.cli import main
from defr.video import StreamInterrupted, VideoError, VideoOutputs, open_source, run_video
from defr.video.records import Frame, Skipped
from defr.video.writers import JsonlWriter, VideoWriter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hoi():
    return tiny_hoi()


def write_video(path: Path, clip, fps: float = 15.0, codec: str = "libx264", pix_fmt: str = "yuv420p") -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=int(fps))
        s.width, s.height, s.pix_fmt = clip[0].shape[1], clip[0].shape[0], pix_fmt
        for f in clip:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def read_video(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- sources -----------------------------------------------------------------------------------------------------


def test_video_file_frames_have_numbers_and_times(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames(12, (64, 48)), fps=15)
    source = open_source(path)
    assert source.fps == 15 and source.total == 12
    items = list(source)
    assert [f.index for f in items] == list(range(12)) and all(isinstance(f, Frame) for f in items)
    assert items[3].time_s == pytest.approx(0.2) and items[0].image.shape == (48, 64, 3)


def corrupt_mjpeg(tmp_path: Path, n: int = 20, bad: int = 9) -> Path:
    """An MJPEG video (one JPEG per frame) whose frame ``bad`` is damaged in the middle of its data."""
    path = write_video(tmp_path / "m.mkv", frames(n, (64, 48)), codec="mjpeg", pix_fmt="yuvj420p")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    data[starts[bad] + 200 : starts[bad] + 900] = bytes(700)
    path.write_bytes(bytes(data))
    return path


def test_a_corrupt_frame_is_skipped_and_later_frames_keep_their_numbers(tmp_path):
    items = list(open_source(corrupt_mjpeg(tmp_path)))
    assert [x.index for x in items] == list(range(20))
    assert isinstance(items[9], Skipped) and items[9].stage == "decode" and "cannot decode" in items[9].reason
    assert sum(isinstance(x, Skipped) for x in items) == 1


def test_unreadable_and_missing_videos_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoError, match="junk.mp4: not a readable video") as e:
        open_source(junk)
    assert "\n" not in str(e.value)
    with pytest.raises(VideoError, match="no such video file or image folder"):
        open_source(tmp_path / "nope.mp4")


def test_a_video_without_frames_is_an_error(tmp_path, hoi):
    path = write_video(tmp_path / "m.mkv", frames(3, (64, 48)), codec="mjpeg", pix_fmt="yuvj420p")
    data = path.read_bytes()
    path.write_bytes(data[: data.find(bytes.fromhex("1F43B675")) + 4])  # the header up to the first cluster
    with pytest.raises(VideoError, match="m.mkv: no frames"):
        run_video(path, Oracle(), hoi, VideoOutputs(frames=tmp_path / "f.jsonl"), progress=False)


def test_image_folder(tmp_path):
    for i, f in enumerate(frames(3)):
        Image.fromarray(f).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "002.png").write_bytes(b"broken")
    items = list(open_source(tmp_path, fps=10))
    assert [x.index for x in items] == [0, 1, 2] and items[1].time_s == pytest.approx(0.1)
    assert isinstance(items[2], Skipped) and "002.png: unreadable image" in items[2].reason


# --- writers -----------------------------------------------------------------------------------------------------


def test_video_writer_refuses_a_size_change_and_keeps_what_was_written(tmp_path):
    w = VideoWriter(tmp_path / "a.mp4", fps=10)
    for f in frames(3, (65, 47)):  # odd sizes are padded
        w.write(f)
    with pytest.raises(VideoError, match=r"frame 3 is 64×48 but the video is 65×47"):
        w.write(frames(1, (64, 48))[0])
    assert w.close() == tmp_path / "a.mp4"
    assert [f.shape for f in read_video(tmp_path / "a.mp4")] == [(48, 66, 3)] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # no temporary file left


def test_video_writer_discard_leaves_nothing(tmp_path):
    w = VideoWriter(tmp_path / "a.mp4", fps=10)
    w.write(frames(1)[0])
    w.discard()
    assert list(tmp_path.iterdir()) == []


def test_jsonl_lines_are_readable_before_close(tmp_path):
    w = JsonlWriter(tmp_path / "x.jsonl")
    w.write({"a": 1})
    w.write({"b": np.float32(0.5)})
    assert read_jsonl(tmp_path / "x.jsonl") == [{"a": 1}, {"b": 0.5}]  # flushed per line
    w.close()


# --- run_video -----------------------------------------------------------------------------------------------------


def outputs(tmp_path: Path, video: bool = True) -> VideoOutputs:
    return VideoOutputs(
        video=tmp_path / "out.mp4" if video else None,
        frames=tmp_path / "frames.jsonl",
        events=tmp_path / "events.jsonl",
        summary=tmp_path / "summary.json",
    )


def test_run_video_writes_every_output(tmp_path, hoi):
    clip = frames(10)
    clip[4] = None  # a corrupt frame in the middle
    summary = run_video(clip, Oracle(nan_frames={7}), hoi, outputs(tmp_path), progress=False)
    lines = read_jsonl(tmp_path / "frames.jsonl")
    assert [x["frame"] for x in lines] == list(range(10))
    keys = ["frame", "time_s", "width", "height", "boxes_h", "boxes_o", "hoi", "scores", "human_id", "object_id"]
    assert (
        list(lines[0]) == keys and lines[4]["skipped"]["stage"] == "decode" and lines[7]["skipped"]["stage"] == "detect"
    )
    assert len(read_video(tmp_path / "out.mp4")) == 10  # skipped frames stay in the video, as grey frames
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["format"] == "defr-video-summary/1" and saved["frames"] == 10 and saved["processed"] == 8
    assert saved["skipped"] == 2 and saved["skipped_by_stage"] == {"decode": 1, "detect": 1}
    assert {"decode", "detect", "track", "preprocess", "hoi", "draw", "write"} <= set(saved["latency_ms"])
    assert saved["latency_ms"]["hoi"]["p90_ms"] >= saved["latency_ms"]["hoi"]["p50_ms"] > 0
    assert saved["stopped"] is None and saved["events"] == len(read_jsonl(tmp_path / "events.jsonl"))


def interrupted_after(n: int):
    for i, f in enumerate(frames(40)):
        if i == n:
            raise KeyboardInterrupt
        yield f


def test_interruption_finalises_the_video_and_jsonl(tmp_path, hoi):
    with pytest.raises(StreamInterrupted) as e:
        run_video(interrupted_after(20), Oracle(), hoi, outputs(tmp_path), config=None, progress=False)
    lines = read_jsonl(tmp_path / "frames.jsonl")
    assert 0 < len(lines) <= 20 and [x["frame"] for x in lines] == list(range(len(lines)))
    assert len(read_video(tmp_path / "out.mp4")) == len(lines)
    assert e.value.summary["stopped"] == "interrupted" and e.value.summary["frames"] == len(lines)
    assert json.loads((tmp_path / "summary.json").read_text())["stopped"] == "interrupted"
    read_jsonl(tmp_path / "events.jsonl")  # whole lines only
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_size_change_with_a_video_output_stops_with_one_line(tmp_path, hoi):
    clip = frames(3, (96, 72)) + frames(2, (64, 80))
    with pytest.raises(VideoError, match="cannot change size mid-stream"):
        run_video(clip, Oracle(), hoi, outputs(tmp_path), progress=False)
    assert len(read_video(tmp_path / "out.mp4")) == 3  # what came before is kept, finalised
    assert json.loads((tmp_path / "summary.json").read_text())["stopped"] == "error"


# --- the command -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from defr.model import create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(create_model("tiny-vit", 64, seed=0), path)
    return path


def detections_file(path: Path, n: int) -> Path:
    rows = [{"frame": i, **Oracle()([None], [i])[0].to_dict()} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_end_to_end(tmp_path, checkpoint):
    video = write_video(tmp_path / "in.mp4", frames(9, (96, 72)))
    dets = detections_file(tmp_path / "d.jsonl", 9)
    args = ["video", str(video), "--checkpoint", str(checkpoint), "--detector", f"detections:{dets}", "--out",
            str(tmp_path / "o.mp4"), "--events", str(tmp_path / "e.jsonl"), "--frames", str(tmp_path / "f.jsonl"),
            "--batch", "4", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "9 frames at" in result.output and (tmp_path / "o.summary.json").is_file()
    assert [x["frame"] for x in read_jsonl(tmp_path / "f.jsonl")] == list(range(9))
    assert len(read_video(tmp_path / "o.mp4")) == 9


def test_cli_errors_are_one_line(tmp_path, checkpoint, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    video = write_video(tmp_path / "in.mp4", frames(2, (64, 48)))
    base = ["video", str(video), "--checkpoint", str(checkpoint), "--events", str(tmp_path / "e.jsonl")]
    result = CliRunner().invoke(main, base)  # the default detector, without cached weights
    assert result.exit_code == 1 and "--detector-weights PATH" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    dets = f"detections:{detections_file(tmp_path / 'd.jsonl', 2)}"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 100)
    result = CliRunner().invoke(main, [*base[:1], str(junk), *base[2:], "--detector", dets])
    assert result.exit_code == 1 and "junk.mp4: not a readable video" in result.output
    result = CliRunner().invoke(main, [*base, "--mask-mode", "released", "--detector", dets])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["video", str(video), "--checkpoint", str(checkpoint)])
    assert result.exit_code == 2 and "at least one output" in result.output


@pytest.mark.slow
def test_ctrl_c_on_the_command_finalises_and_exits_130(tmp_path, checkpoint):
    """A real SIGINT to ``defr video`` while it runs: exit 130, a playable video, whole JSONL lines."""
    n = 400
    video = write_video(tmp_path / "in.mp4", frames(n, (96, 72)))
    dets = detections_file(tmp_path / "d.jsonl", n)
    out = tmp_path / "o.mp4"
    cmd = [sys.executable, "-m", "defr", "video", str(video), "--checkpoint", str(checkpoint), "--detector",
           f"detections:{dets}", "--out", str(out), "--frames", str(tmp_path / "f.jsonl"), "--events",
           str(tmp_path / "e.jsonl"), "--no-progress", "--batch", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    # a test run started in the background inherits an ignored SIGINT: give the command the default
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    frames_file = tmp_path / "f.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not frames_file.is_file() or len(frames_file.read_text().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = read_jsonl(frames_file)
    assert 5 <= len(lines) < n and [x["frame"] for x in lines] == list(range(len(lines)))
    assert len(read_video(out)) == len(lines)
    assert "interrupted after" in err
