"""``--ray`` batch jobs: ``defr detect --ray`` (Ray Data) and ``defr video --ray`` (a Ray task per video) equal
the local commands, and a worker killed mid-job is retried with every input in the output exactly once.

All tests share one local Ray (2 CPUs); each is ``slow`` and ``ray``."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from servekit import TOL, assert_results_equal, checkpoint, image_set

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from defr.serve.connect import init_ray

    init_ray(num_cpus=2)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return Path(checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors"))


def detect(args: list[str]) -> None:
    from defr.cli import main

    r = CliRunner().invoke(main, ["detect", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output


def ray_children(ray, words: str) -> list[int]:
    """Processes of this test's Ray (descendants of its raylet) whose command line contains ``words``."""
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [raylet]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            try:
                if words in (Path("/proc") / str(child) / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(child)
            except OSError:
                continue
    return found


def kill_when_seen(ray, words: str, after_s: float, killed: list, ready=lambda: True) -> threading.Thread:
    """A thread that SIGKILLs the first process matching ``words`` ``after_s`` seconds after it appears, if it
    still matches then (a task worker's title turns to IDLE when its task ends) and ``ready()`` says the job
    is under way (polled while the process lives)."""

    def run() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            pids = ray_children(ray, words)
            if pids:
                time.sleep(after_s)
                while pids[0] in ray_children(ray, words) and not ready():
                    time.sleep(0.01)
                if pids[0] not in ray_children(ray, words):  # it finished (an idle worker is no kill mid-job)
                    continue
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_detect_ray_equals_local_detect(local_ray, model, tmp_path):
    images, dets = image_set(tmp_path, 12)
    common = ["--checkpoint", str(model), "--images", str(images), "--detections", str(dets), "--batch-size", "4"]
    detect([*common, "--out", str(tmp_path / "local.json")])
    detect([*common, "--out", str(tmp_path / "ray.json"), "--ray", "--concurrency", "2"])
    local, on_ray = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "ray.json"))
    assert len(local) == 12 and sum(len(r["hoi"]) for r in local.values()) > 0
    assert_results_equal(on_ray, local)


def test_detect_ray_with_more_actors_than_cpus_finishes(local_ray, model, tmp_path):
    """Round-5 probe: ``--concurrency 10000`` on 4 images ran past the probe's 120 s: Ray Data set up a
    fixed pool of 10,000 one-CPU actors; it is an upper bound now (an autoscaling pool from one actor)."""
    from defr.runtime.io import load_detections
    from defr.serve.batch import detect_images_ray

    images, dets = image_set(tmp_path, 3)
    paths = sorted(images.iterdir())
    found: list[dict] = []
    job = threading.Thread(
        target=lambda: found.append(
            detect_images_ray(
                model, paths, load_detections(dets, [p.name for p in paths]), concurrency=10000, progress=False
            )
        ),
        daemon=True,
    )
    job.start()
    job.join(timeout=80)  # ~15 s here; the fixed pool took ~135 s on this machine
    assert found and sorted(found[0]) == [p.name for p in paths]


def test_detect_ray_task_failure_is_one_line_as_the_local_run(local_ray, model, tmp_path):
    from defr.cli import main

    images, dets = image_set(tmp_path, 4)
    bad = images / "img_002.png"
    bad.write_bytes(bad.read_bytes()[:100])  # a truncated image: the local run says one line
    args = ["detect", "--checkpoint", str(model), "--images", str(images), "--detections", str(dets)]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r.json"), "--ray"], catch_exceptions=False)
    assert r.exit_code == 1, r.output
    assert "Error: the Ray job failed: " in r.output and "img_002.png: cannot read image" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "r.json").exists()


def test_detect_ray_survives_a_killed_worker(local_ray, model, tmp_path):
    from defr.runtime.io import list_images, load_detections
    from defr.serve.batch import detect_images_ray

    images, dets = image_set(tmp_path, 48, size=400, seed=1)
    paths = list_images(images)
    detections = load_detections(dets, [p.name for p in paths])
    killed: list[int] = []
    killer = kill_when_seen(local_ray, "_ImageDetector", 1.0, killed)
    results = detect_images_ray(model, paths, detections, batch_size=2, concurrency=2, progress=False)
    killer.join(timeout=5)
    assert killed, "no detector actor was seen to kill"
    detect(
        ["--checkpoint", str(model), "--images", str(images), "--detections", str(dets)]
        + ["--out", str(tmp_path / "l.json")]
    )
    assert_results_equal(results, json.loads((tmp_path / "l.json").read_text()))  # every image, exactly once


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    pytest.importorskip("av")
    from defr.data.synth import generate_synthetic_video

    folder = tmp_path_factory.mktemp("clips")
    for seed in (0, 1):
        generate_synthetic_video(folder / f"clip{seed}.mp4", frames=24, fps=12, width=96, seed=seed)
    return folder


def frames_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_frames_equal(got: list[dict], want: list[dict]) -> None:
    assert [f["frame"] for f in got] == [f["frame"] for f in want] == list(range(len(want)))
    for g, w in zip(got, want, strict=True):
        assert g["hoi"] == w["hoi"] and g["human_id"] == w["human_id"]
        np.testing.assert_allclose(np.asarray(g["scores"]), np.asarray(w["scores"]), atol=TOL, rtol=0)


def video_args(model: Path, clips: Path, *rest: str) -> list[str]:
    spec = f"detections:{clips}/{{stem}}.detections.jsonl"
    return ["video", "--checkpoint", str(model), "--detector", spec, "--no-progress", "--batch", "4", *rest]


def test_video_ray_equals_local_video_per_clip(local_ray, model, clips, tmp_path):
    from defr.cli import main

    runner = CliRunner()
    for clip in ("clip0", "clip1"):
        args = video_args(model, clips, str(clips / f"{clip}.mp4"), "--frames", str(tmp_path / f"{clip}.local.jsonl"))
        args[args.index("--detector") + 1] = f"detections:{clips}/{clip}.detections.jsonl"
        r = runner.invoke(main, args, catch_exceptions=False)
        assert r.exit_code == 0, r.output
    out = tmp_path / "ray"
    args = video_args(model, clips, str(clips), "--frames", str(out), "--events", str(out), "--ray", "local")
    r = runner.invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0 and "2 videos, 48 frames" in r.output, r.output
    for clip in ("clip0", "clip1"):
        assert_frames_equal(frames_of(out / f"{clip}.frames.jsonl"), frames_of(tmp_path / f"{clip}.local.jsonl"))
        assert json.loads((out / f"{clip}.summary.json").read_text())["frames"] == 24
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".defr-outputs.json"]
        + [f"{c}.{k}" for c in ("clip0", "clip1") for k in ("frames.jsonl", "events.jsonl", "summary.json")]
    )  # no staged file left behind


def test_video_ray_a_corrupt_clip_fails_alone_and_reruns_write_into_the_folder(local_ray, model, clips, tmp_path):
    import shutil

    from defr.cli import main

    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("clip0.mp4", "clip0.detections.jsonl"):
        shutil.copy(clips / name, folder / name)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    shutil.copy(clips / "clip0.detections.jsonl", folder / "broken.detections.jsonl")
    out = tmp_path / "out"
    out.mkdir()  # an existing output folder, as on a rerun
    r = CliRunner().invoke(main, video_args(model, folder, str(folder), "--frames", str(out), "--ray", "local"))
    assert r.exit_code == 1, r.output
    assert "broken.mp4: failed: " in r.output and "1 of 2 videos failed" in r.output, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    assert sorted(p.name for p in out.iterdir()) == [".defr-outputs.json", "clip0.frames.jsonl", "clip0.summary.json"]
    first = (out / "clip0.frames.jsonl").read_text()
    r = CliRunner().invoke(main, video_args(model, folder, str(folder / "clip0.mp4"), "--frames", str(out), "--ray"))
    assert r.exit_code == 0 and "1 videos, 24 frames" in r.output, r.output
    assert (out / "clip0.frames.jsonl").read_text() == first


def test_video_ray_task_killed_mid_video_is_retried(local_ray, model, tmp_path):
    pytest.importorskip("av")
    from defr.data.synth import generate_synthetic_video
    from defr.serve.batch import VideoJob, run_videos_ray
    from defr.video import StreamConfig

    clips = tmp_path / "clips"
    clips.mkdir()
    for seed in (0, 1):  # long enough that a worker is caught with some frames written and more to come
        generate_synthetic_video(clips / f"clip{seed}.mp4", frames=48, fps=12, width=96, seed=seed)
    out = tmp_path / "out"
    spec = f"detections:{clips}/{{stem}}.detections.jsonl"
    job = VideoJob(str(model), {}, spec, {}, StreamConfig(batch=2), frames_dir=out)

    def mid_video() -> bool:  # a staged frames file holds a frame: the worker is inside run_video
        try:
            return any(p.stat().st_size > 0 for p in out.glob(".clip*.frames.jsonl.defr-*"))
        except OSError:  # the staged file went as it was read
            return False

    killed: list[int] = []
    killer = kill_when_seen(local_ray, "run_one_video", 0.0, killed, ready=mid_video)
    summaries = run_videos_ray([clips / "clip0.mp4", clips / "clip1.mp4"], job, concurrency=2, progress=False)
    killer.join(timeout=5)
    assert killed, "no video task was seen to kill"
    assert [s["frames"] for s in summaries] == [48, 48]
    for clip in ("clip0", "clip1"):
        lines = frames_of(out / f"{clip}.frames.jsonl")
        assert [f["frame"] for f in lines] == list(range(48))  # each frame once, in order
    assert sorted(p.name for p in out.iterdir()) == [
        ".defr-outputs.json",
        "clip0.frames.jsonl",
        "clip0.summary.json",
        "clip1.frames.jsonl",
        "clip1.summary.json",
    ]
