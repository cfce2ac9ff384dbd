"""Sources, writers and run_video: video files, bad input, interruption, the ``defr video`` command."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from videokit import Oracle, frames, person_and_ball, tiny_hoi

from defr.cli import main
from defr.errors import DefrError
from defr.runtime.io import InputFileError
from defr.video import (
    HOIStream,
    PrecomputedDetector,
    StreamConfig,
    StreamInterrupted,
    Summary,
    VideoError,
    VideoOutputs,
    open_source,
    run_video,
)
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
    # 128 x 96: each JPEG outlasts the 900 bytes damaged below; at 64 x 48 one core's encoder made frame 9
    # 729 bytes, and the demuxer then dropped the last six frames
    path = write_video(tmp_path / "m.mkv", frames(n, (128, 96)), codec="mjpeg", pix_fmt="yuvj420p")
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


def write_vfr(path: Path, clip, times_ms: list[int]) -> Path:
    """An MJPEG Matroska video whose frames have the given presentation times (a variable frame rate)."""
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("mjpeg", rate=30)
        s.width, s.height, s.pix_fmt = clip[0].shape[1], clip[0].shape[0], "yuvj420p"
        s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        for f, t in zip(clip, times_ms, strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


VFR_MS = [0, 100, 150, 200, 233, 266, 286, 306, 326, 346, 446, 496, 596, 646, 696, 796, 846, 896, 946, 996]


def test_frames_are_numbered_in_decode_order_and_keep_their_timestamps(tmp_path):
    """Issue 18 #6: a variable frame rate moves the times, never the numbers (timestamps gave 0, 3, 4, 6, ...)."""
    items = list(open_source(write_vfr(tmp_path / "vfr.mkv", frames(len(VFR_MS), (64, 48)), VFR_MS)))
    assert [x.index for x in items] == list(range(len(VFR_MS)))
    assert [x.time_s for x in items] == pytest.approx([t / 1000 for t in VFR_MS])


def test_precomputed_detections_attach_by_decode_order(tmp_path, hoi):
    """Issue 18 #6: the detections of frame n are those of the n-th decoded frame, whatever its timestamp."""
    video = write_vfr(tmp_path / "vfr.mkv", frames(len(VFR_MS), (96, 72)), VFR_MS)
    dets = detections_file(tmp_path / "d.jsonl", len(VFR_MS))
    results = list(HOIStream(PrecomputedDetector.from_file(dets), hoi, batch=4).run(video))
    assert [r.index for r in results] == list(range(len(VFR_MS)))
    for r in results:
        np.testing.assert_allclose(r.detections.boxes, person_and_ball(float(r.index)).boxes)
        assert r.time_s == pytest.approx(VFR_MS[r.index] / 1000)


def test_an_image_folder_decodes_like_detect(tmp_path):
    """Issue 18 #4: folder frames go through defr.images (16-bit scaled, alpha onto white, mode F refused)."""
    from defr.runtime.io import read_image

    rng = np.random.default_rng(0)
    grey16 = rng.integers(30000, 40000, (24, 32), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "0_grey16.png")
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "1_rgba.png")
    palette = Image.fromarray(rng.integers(0, 4, (24, 32), dtype=np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    palette.save(tmp_path / "2_palette.png", transparency=1)
    Image.fromarray(rng.random((24, 32), dtype=np.float32), "F").save(tmp_path / "3_float.tif")
    items = list(open_source(tmp_path))
    for item in items[:3]:
        path = next(tmp_path.glob(f"{item.index}_*"))
        assert isinstance(item, Frame), item
        np.testing.assert_array_equal(item.image, np.asarray(read_image(path)), err_msg=path.name)
    assert abs(items[0].image.mean() - grey16.mean() / 257) < 1  # not all white
    assert isinstance(items[3], Skipped) and "mode F" in items[3].reason
    with pytest.raises(InputFileError, match="mode F"):
        read_image(tmp_path / "3_float.tif")  # detect refuses it too


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG header of side × side pixels (no pixel data): PIL refuses it as a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_in_a_folder_is_one_line_and_the_frames_before_it_are_written(tmp_path, hoi):
    """Issue 18 #13 (video): the 8th of 9 images is a bomb: a one-line error naming it, frames 0..6 written."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, f in enumerate(frames(9)):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    bomb_png(folder / "007.png")
    with pytest.raises(VideoError, match=r"007.png: refused as a possible decompression bomb") as e:
        run_video(folder, Oracle(), hoi, outputs(tmp_path), progress=False)
    assert "\n" not in str(e.value)
    assert [x["frame"] for x in read_jsonl(tmp_path / "frames.jsonl")] == list(range(7))
    assert len(read_video(tmp_path / "out.mp4")) == 7
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["stopped"] == "error" and "decompression bomb" in saved["error"] and saved["complete"] is True


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


@pytest.mark.slow
def test_a_jsonl_line_that_does_not_fit_is_truncated_away(tmp_path):
    """Issue 18 #8: a file-size limit (the kernel's short write, then EFBIG, as on a full disk) leaves whole
    lines only and a one-line error naming the file."""
    path = tmp_path / "x.jsonl"
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
from defr.video.writers import JsonlWriter
w = JsonlWriter({str(path)!r})
try:
    for i in range(100):
        w.write({{"line": i, "pad": "x" * 300}})
except Exception as e:
    print(type(e).__name__, e)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.count("\n") == 1
        and out.stdout.startswith("OutputError")
        and f"{path}: cannot write line 4" in out.stdout
    )
    assert path.read_bytes().endswith(b"\n") and [x["line"] for x in read_jsonl(path)] == [0, 1, 2]


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, hoi):
    """Issue 18 #7: a killed run's video temporary (its process is gone) and an atomic write's are removed on
    the next run; a running process's and other files are kept."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".out.mp4.{dead.pid}-abcd1234.tmp", tmp_path / ".summary.json.x1y2z3w4.tmp"]
    kept = [tmp_path / f".out.mp4.{os.getppid()}-live0000.tmp", tmp_path / ".other.mp4.abc.tmp", tmp_path / "notes.tmp"]
    for p in stale + kept:
        p.write_bytes(b"partial")
    run_video(frames(3), Oracle(), hoi, outputs(tmp_path), progress=False)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


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
    assert isinstance(summary, Summary) and saved == json.loads(json.dumps(summary.to_dict()))
    assert saved["format"] == "defr-video-summary/2" and saved["frames"] == 10 and saved["processed"] == 8
    assert saved["complete"] is True and saved["outputs"]["video"] == str(tmp_path / "out.mp4")
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
    assert e.value.summary.stopped == "interrupted" and e.value.summary.frames == len(lines)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["stopped"] == "interrupted" and saved["signal"] == "SIGINT" and saved["complete"] is True
    assert isinstance(e.value, KeyboardInterrupt) and not isinstance(e.value, DefrError)  # issue 17: no "Error:"
    read_jsonl(tmp_path / "events.jsonl")  # whole lines only
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_size_change_with_a_video_output_stops_with_one_line(tmp_path, hoi):
    clip = frames(3, (96, 72)) + frames(2, (64, 80))
    with pytest.raises(VideoError, match="cannot change size mid-stream"):
        run_video(clip, Oracle(), hoi, outputs(tmp_path), progress=False)
    assert len(read_video(tmp_path / "out.mp4")) == 3  # what came before is kept, finalised
    assert json.loads((tmp_path / "summary.json").read_text())["stopped"] == "error"


class Inspector(Oracle):
    """An Oracle that records, at frame 3, what the outputs hold on disk while the run is under way."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder, self.seen = folder, None

    def __call__(self, images, indices):
        if 3 in indices:
            self.seen = {
                "summary": json.loads((self.folder / "summary.json").read_text()),
                "video": (self.folder / "out.mp4").exists(),
            }
        return super().__call__(images, indices)


def test_a_run_over_previous_outputs_marks_its_set_incomplete_until_it_is_final(tmp_path, hoi):
    """Issue 18 #7: from the first write on, the files on disk are this run's only, and the summary says
    "complete": false until every output is finalised (what a kill -9 leaves)."""
    run_video(frames(12, seed=1), Oracle(), hoi, outputs(tmp_path), progress=False)  # the previous run
    inspector = Inspector(tmp_path)
    run_video(frames(6), inspector, hoi, outputs(tmp_path), config=StreamConfig(batch=1), progress=False)
    assert inspector.seen["summary"]["complete"] is False and inspector.seen["summary"]["frames"] == 0
    assert inspector.seen["video"] is False  # the previous run's video is not left beside this run's files
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["complete"] is True and saved["frames"] == 6 and len(read_video(tmp_path / "out.mp4")) == 6


def test_outputs_follow_the_umask(tmp_path, hoi):
    """Issue 18 #20: the annotated video is 0666 minus the umask (mkstemp's 0600 before)."""
    previous = os.umask(0o022)
    try:
        run_video(frames(3), Oracle(), hoi, outputs(tmp_path), progress=False)
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["out.mp4", "frames.jsonl", "events.jsonl", "summary.json"], 0o644)


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


def video_args(video: Path, checkpoint: Path, dets: Path, *outputs: str) -> list[str]:
    return ["video", str(video), "--checkpoint", str(checkpoint), "--detector", f"detections:{dets}", "--no-progress",
            *outputs]  # fmt: skip


@pytest.mark.parametrize(
    "collision",
    [
        ["--frames", "X.jsonl", "--events", "X.jsonl"],
        ["--frames", "X.jsonl", "--summary", "X.jsonl"],
        ["--frames", "X.jsonl", "--events", "sub/../X.jsonl"],
        ["--frames", "X.jsonl", "--events", "link.jsonl"],
        ["--frames", "X.jsonl", "--events", "hard.jsonl"],
        ["--frames", "X.jsonl", "--out", "in.mp4"],
        ["--frames", "d.jsonl"],
    ],
)
def test_outputs_that_are_one_file_are_refused(tmp_path, checkpoint, monkeypatch, collision):
    """Issue 18 #9: two outputs that resolve to one file, or an output that is an input, are refused before
    anything is written."""
    monkeypatch.chdir(tmp_path)
    video = write_video(tmp_path / "in.mp4", frames(3, (64, 48)))
    dets = detections_file(tmp_path / "d.jsonl", 3)
    (tmp_path / "sub").mkdir()
    (tmp_path / "X.jsonl").write_text("kept\n")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "X.jsonl")
    os.link(tmp_path / "X.jsonl", tmp_path / "hard.jsonl")
    before = {p: p.read_bytes() for p in (video, dets, tmp_path / "X.jsonl")}
    result = CliRunner().invoke(main, video_args(video, checkpoint, dets, *collision))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert ("one file" in result.output or "is the input" in result.output) and "(summary:" not in result.output
    assert {p: p.read_bytes() for p in before} == before


def test_a_full_disk_is_one_line_and_the_summary_says_so(tmp_path, checkpoint, monkeypatch):
    """Issue 18 #8: ENOSPC on the frames JSONL: a one-line error naming the file; the summary says why the
    run stopped. (A device as an output, /dev/full included, is refused before the run: issue 28 #2.)"""
    import defr.video.writers as writers

    video = write_video(tmp_path / "in.mp4", frames(3, (64, 48)))
    dets = detections_file(tmp_path / "d.jsonl", 3)
    (tmp_path / "full.jsonl").symlink_to("/dev/full")
    args = video_args(video, checkpoint, dets, "--frames", str(tmp_path / "full.jsonl"))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "full.jsonl is a character device, not a regular file" in result.output
    assert not (tmp_path / "full.summary.json").exists()
    real_write = os.write

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path / "f.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(writers.os, "write", full)
    args = video_args(video, checkpoint, dets, "--frames", str(tmp_path / "f.jsonl"), "--summary",
                      str(tmp_path / "s.json"))  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"{tmp_path / 'f.jsonl'}: cannot write line 1 (No space left on device)" in result.output
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["stopped"] == "error" and "No space left on device" in saved["error"] and saved["complete"] is True


def test_ctrl_c_in_the_demo_video_stage_exits_130(tmp_path, hoi, monkeypatch):
    """Issue 17: StreamInterrupted is a KeyboardInterrupt, not a DefrError: ``defr demo`` exits 130, not "Error"."""
    monkeypatch.setattr(
        "defr.commands.demo.run_demo",
        lambda cfg: run_video(interrupted_after(3), Oracle(), hoi, outputs(tmp_path), progress=False),
    )
    result = CliRunner().invoke(main, ["demo", "--output", str(tmp_path / "demo")])
    assert result.exit_code == 130 and "Error" not in result.output, result.output
    assert json.loads((tmp_path / "summary.json").read_text())["stopped"] == "interrupted"


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


@pytest.mark.slow
def test_kill_9_then_sigterm_over_previous_outputs(tmp_path, checkpoint):
    """Issue 18 #7: ``kill -9`` over a previous run's outputs leaves this run's files only, marked
    ``"complete": false``; the next run removes the killed run's video temporary; SIGTERM is taken like
    Ctrl-C (outputs finalised, exit 143)."""
    n = 400
    video = write_video(tmp_path / "in.mp4", frames(n, (96, 72)))
    dets = detections_file(tmp_path / "d.jsonl", n)
    out, frames_file, summary = tmp_path / "o.mp4", tmp_path / "f.jsonl", tmp_path / "o.summary.json"
    outs = ["--out", str(out), "--frames", str(frames_file), "--events", str(tmp_path / "e.jsonl"), "--batch", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    short = write_video(tmp_path / "short.mp4", frames(3, (96, 72)), fps=15)
    previous = subprocess.run([sys.executable, "-m", "defr", *video_args(short, checkpoint, dets, *outs)], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert previous.returncode == 0, previous.stderr

    def run_until(sig: int) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "defr", *video_args(video, checkpoint, dets, *outs)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 180
        # this run's video temporary shows that it has started its JSONL files afresh
        while time.time() < deadline and not (
            list(tmp_path.glob(f".o.mp4.{proc.pid}-*.tmp")) and len(frames_file.read_text().splitlines()) >= 5
        ):
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        return proc.returncode, err

    code, err = run_until(signal.SIGKILL)
    assert code == -signal.SIGKILL
    saved = json.loads(summary.read_text())
    assert saved["complete"] is False and saved["source"] == str(video)
    assert not out.exists() and len(list(tmp_path.glob(".o.mp4.*.tmp"))) == 1  # not the previous run's video
    lines = read_jsonl(frames_file)  # whole lines, all of this run
    assert 5 <= len(lines) < n and [x["frame"] for x in lines] == list(range(len(lines)))
    read_jsonl(tmp_path / "e.jsonl")

    code, err = run_until(signal.SIGTERM)
    assert code == 143, err
    assert "interrupted after" in err and "(SIGTERM)" in err
    saved = json.loads(summary.read_text())
    assert saved["complete"] is True and saved["stopped"] == "interrupted" and saved["signal"] == "SIGTERM"
    lines = read_jsonl(frames_file)
    assert len(read_video(out)) == len(lines) == saved["frames"]
    assert not list(tmp_path.glob(".*.tmp"))  # the killed run's temporary is gone
