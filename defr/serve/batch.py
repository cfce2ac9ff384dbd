"""Offline batch jobs on Ray: ``defr detect --ray`` (Ray Data) and ``defr video --ray`` (one Ray task per video).

Images: a Ray Data set of (path, name, detections) rows, ``map_batches`` over a pool of
``concurrency`` actors, each holding one ``HOIDetector`` (``load_detector``) and detecting ``batch``
images per call, as ``defr.runtime.detect.run_detection`` does locally. Ray Data restarts an actor
that dies and re-runs its batches; the driver checks that every image comes back exactly once and
writes the same results file as the local command (``defr.files.write_json``: atomic).

Videos: a video's frames stay in order on one worker (tracking needs them), so each video is one
Ray task running ``defr.video.run_video``. Per video ``STEM.mp4`` / ``STEM.frames.jsonl`` /
``STEM.events.jsonl`` / ``STEM.summary.json`` land in the folders given for those outputs, written
through ``defr.files.OutputSet`` as the local commands' outputs are (``VideoOutputSets``): every
video's set is checked and taken by the driver before any task runs (an output that is an input,
one that is not a regular file, a file of those names that defr did not write unless ``overwrite``,
another run writing them: refused, one line); a task writes its video's staged files, and the driver
swaps the set in when the task succeeds, or drops it when the task fails (the old files stay). A
task that dies is retried (``max_retries``) and rewrites its staged files from the start.

A task that fails (a truncated image, a missing detections file, a corrupt video) is one line naming
its cause (``failure_line``), as the local run's, not Ray's remote traceback. One video that fails does
not stop the others: each failure is reported as it happens (``on_failed``) and the job raises
``VideoJobsFailed`` at the end, after every other video has been written.

Inputs and the model file must be readable at the same paths on every node (a shared file system).
This module imports Ray: only the ``--ray`` paths of the commands and the tests import it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from defr.detections import Detections
from defr.errors import ConfigError, DefrError
from defr.files import OutputSet
from defr.jsonio import parse_json
from defr.optional import import_ray, require
from defr.runtime import load_detector
from defr.runtime.io import read_image
from defr.video import StreamConfig, VideoOutputs, make_detector, run_video
from defr.video.run import OUTPUT_NAMES

ray = import_ray()
ray_data = require("ray.data", "--ray batch jobs (Ray Data)", "serve", package="ray[data]")

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
# Per video output: the file name after the stem, and the option that names its folder (messages say it).
OUTPUT_FILES = {"video": ".mp4", "frames": ".frames.jsonl", "events": ".events.jsonl", "summary": ".summary.json"}
OUTPUT_OPTIONS = {"video": "--out", "frames": "--frames", "events": "--events", "summary": "--summary"}


class BatchJobError(DefrError, RuntimeError):
    """A Ray batch job that failed, or whose output would not hold every input exactly once."""


class VideoJobsFailed(BatchJobError):
    """Some videos of a ``run_videos_ray`` job failed; ``done``: the summaries of the others (written),
    ``failures``: {video: one line}."""

    def __init__(self, done: list[dict], failures: dict[str, str]):
        video, why = next(iter(failures.items()))
        named = why if why.startswith(f"{video}:") else f"{video}: {why}"  # a reader's line names its file already
        super().__init__(
            f"{len(failures)} of {len(done) + len(failures)} videos failed (the others were written); first: {named}"
        )
        self.done, self.failures = done, failures


def failure_line(error: BaseException) -> str:
    """One line for a failed Ray task or Ray Data job: its root cause's message (a ``DefrError`` or
    ``OSError``: the local run's line; anything else with its type), not Ray's remote traceback."""
    while True:
        if isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None and error.cause is not error:
            error = error.cause
        elif error.__cause__ is not None:
            error = error.__cause__
        elif error.__context__ is not None and not error.__suppress_context__:
            error = error.__context__  # Ray Data's UserCodeException is raised while handling the UDF's error
        else:
            break
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if isinstance(error, (DefrError, OSError)) and text else f"{type(error).__name__}: {text}"


class _ImageDetector:
    """A Ray Data actor: one ``HOIDetector``; a batch of rows → their results entries as JSON text."""

    def __init__(self, model: str, load: dict):
        self.detector = load_detector(model, **load)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """→ {"name", "result" (JSON text), "error"}: bad input (a ``DefrError`` / ``OSError``) comes back as
        its one line in ``error``, as data, since Ray Data's own wrapping of a raised error loses its cause."""
        paths = [str(p) for p in batch["path"]]
        try:
            images = [read_image(p) for p in paths]
            dets = [
                Detections.from_dict(parse_json(d, p), name=p) for d, p in zip(batch["detections"], paths, strict=True)
            ]
            results = [json.dumps(r.to_json()) for r in self.detector.detect(images, dets, names=paths)]
            errors = [""] * len(paths)
        except (DefrError, OSError) as e:
            results, errors = [""] * len(paths), [failure_line(e)] * len(paths)
        return {"name": batch["name"], "result": np.array(results), "error": np.array(errors)}


def detect_images_ray(
    model: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    detections: dict[str, Detections],
    load: dict | None = None,
    batch_size: int = 8,
    concurrency: int = 2,
    num_gpus: float = 0.0,
    progress: bool = True,
) -> dict[str, dict]:
    """``run_detection`` on Ray Data: the same results format ``{filename: entry}``, in the order of ``image_paths``.

    detections: ``{filename: Detections}`` (``defr.runtime.io.load_detections``);
    load: ``load_detector`` options; concurrency: at most this many detector actors (each 1 CPU and
    ``num_gpus``; fewer where the cluster cannot place more).
    Needs a connected Ray (``defr.serve.connect.ray_session``). Raises ``BatchJobError`` if an image comes
    back twice or never.
    """
    if batch_size < 1 or concurrency < 1:
        raise ConfigError(f"batch_size and concurrency must be >= 1, not {batch_size}, {concurrency}")
    paths = [Path(p) for p in image_paths]
    rows = [
        {
            "path": str(p.resolve()),
            "name": p.name,
            "detections": json.dumps(detections[p.name].to_dict()),
        }
        for p in paths
    ]
    data = ray_data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 4 * concurrency)))
    out = data.map_batches(
        _ImageDetector,
        fn_constructor_args=(str(model), load or {}),
        batch_size=batch_size,
        # up to `concurrency` actors, as many as the cluster can place: a fixed pool larger than its CPUs
        # waited for actors that could never start (`--concurrency 10000`: a hang; round-5 probe)
        concurrency=(1, concurrency),
        num_cpus=1,
        num_gpus=num_gpus,
        batch_format="numpy",
    )
    results: dict[str, dict] = {}
    threads_before = set(threading.enumerate())
    out_rows = iter(out.iter_rows())
    with tqdm(total=len(rows), desc="detect (ray)", unit="img", disable=not progress) as bar:
        try:
            for row in out_rows:
                name = str(row["name"])
                if row["error"]:
                    raise BatchJobError(f"the Ray job failed: {row['error']}")
                if name in results:
                    raise BatchJobError(f"{name}: came back twice from the Ray job (a retried batch was not replaced)")
                results[name] = parse_json(row["result"], f"result of {name}")
                bar.update()
        except ray.exceptions.RayError as e:
            raise BatchJobError(f"the Ray job failed: {failure_line(e)}") from None
        finally:
            stop_ray_data(out_rows, threads_before)
    missing = [p.name for p in paths if p.name not in results]
    if missing:
        raise BatchJobError(f"the Ray job returned no result for {len(missing)} image(s): {', '.join(missing[:5])}")
    return {p.name: results[p.name] for p in paths}


def stop_ray_data(out_rows, threads_before: set[threading.Thread], timeout_s: float = 60.0) -> None:
    """Stop a Ray Data job's executor before ``ray.shutdown`` may run: close the row iterator (Ray's own
    ``finally`` then shuts the executor down) and wait for the executor's thread. Ray waits 2 s for that
    thread; one still scheduling when the driver disconnects makes Ray's core worker end the whole process
    with exit 1 (seen as 1 in 3 SIGTERMs during ``detect --ray``, instead of the interrupt's 143)."""
    out_rows.close()
    for thread in set(threading.enumerate()) - threads_before:
        if thread.name.startswith("StreamingExecutor"):
            thread.join(timeout_s)


@dataclass(frozen=True)
class VideoJob:
    """What every video's task needs: the HOI model and its ``load_detector`` options, the object
    detector spec (``{stem}`` in it becomes each video's file name without suffix, e.g.
    ``detections:clips/{stem}.detections.jsonl``) and options, the stream config, and output folders
    (None: that output is not written; the summary goes beside the first of them without its own).
    inputs: files every video's run reads (the model's files, the detector's weights), which no output
    may be; overwrite: replace files of the outputs' names that defr did not write."""

    model: str
    load: dict
    detector: str
    detector_options: dict
    config: StreamConfig
    fps: float | None = None
    video_dir: Path | None = None
    frames_dir: Path | None = None
    events_dir: Path | None = None
    summary_dir: Path | None = None
    inputs: tuple[str, ...] = ()
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.video_dir is None and self.frames_dir is None and self.events_dir is None:
            raise ConfigError("a video job needs at least one output folder (video, frames or events)")

    def outputs(self, video: Path) -> OutputSet:
        """The output set of one video (checked now; taken when entered): names defr chose in the job's folders."""
        stem = video.stem
        first = next(d for d in (self.frames_dir, self.events_dir, self.video_dir) if d is not None)
        folders = {"video": self.video_dir, "frames": self.frames_dir, "events": self.events_dir}
        folders["summary"] = self.summary_dir or first
        named = {OUTPUT_OPTIONS[k]: Path(d) / f"{stem}{OUTPUT_FILES[k]}" for k, d in folders.items() if d is not None}
        kind, _, detections = self.detector.replace("{stem}", stem).partition(":")
        inputs = [video, *self.inputs, *([detections] if kind == "detections" else [])]
        return OutputSet(named, inputs=inputs, defaults=named, overwrite=self.overwrite)


class VideoOutputSets:
    """The outputs of every video of a job, one ``OutputSet`` each (``VideoJob.outputs``), checked when made.

    Entered (before any task runs) it takes every set (``OutputRefused`` / ``OutputBusy`` as the local
    command's); ``staged[video]`` gives each output's staged path by option; ``finish(video)`` swaps a
    video's set in, ``finish(video, error)`` drops it. Leaving the block drops the sets not finished."""

    def __init__(self, videos: Sequence[str | os.PathLike], job: VideoJob):
        self.sets = {str(v): job.outputs(Path(v)) for v in videos}
        self.staged: dict[str, dict[str, str]] = {}
        self._open: dict[str, OutputSet] = {}

    def __enter__(self) -> VideoOutputSets:
        try:
            for video, outputs in self.sets.items():
                self.staged[video] = {label: str(path) for label, path in outputs.__enter__().items()}
                self._open[video] = outputs
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def finish(self, video: str, error: BaseException | None = None) -> None:
        """End ``video``'s set as its ``with`` block would: swapped in without ``error``, dropped with one."""
        outputs = self._open.pop(video)
        if error is None:
            outputs.__exit__(None, None, None)
        else:
            outputs.__exit__(type(error), error, error.__traceback__)

    def __exit__(self, exc_type, exc, tb) -> None:
        for video in list(self._open):
            self.finish(video, exc if isinstance(exc, Exception) else BatchJobError("the job stopped"))


def list_videos(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Video files and folders of them (their files with a video suffix, sorted) → the videos, each once by stem."""
    videos: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not found:
                raise ConfigError(f"{source}: no video files ({', '.join(VIDEO_SUFFIXES)})")
            videos += found
        elif source.is_file():
            videos.append(source)
        else:
            raise ConfigError(f"{source}: no such video file or folder")
    stems = [p.stem for p in videos]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ConfigError(f"outputs are named by the video's stem, but stems repeat: {repeated[:5]}")
    return videos


def run_one_video(source: str, job: VideoJob, staged: dict[str, str]) -> dict:
    """One video through ``run_video`` into its staged outputs (by option, ``VideoOutputSets.staged``) → its
    summary (with ``video`` and the Ray ``node_id`` it ran on)."""
    stem = Path(source).stem
    outputs = VideoOutputs(**{k: staged.get(OUTPUT_OPTIONS[k]) for k in OUTPUT_NAMES})
    objects = make_detector(job.detector.replace("{stem}", stem), **job.detector_options)
    hoi = load_detector(job.model, **job.load)
    summary = run_video(source, objects, hoi, outputs, job.config, fps=job.fps, progress=False)
    return {"video": str(source), "node_id": ray.get_runtime_context().get_node_id(), **summary.to_dict()}


def run_videos_ray(
    videos: Sequence[str | os.PathLike],
    job: VideoJob,
    concurrency: int = 2,
    num_gpus: float = 0.0,
    max_retries: int = 3,
    progress: bool = True,
    on_done: Callable[[dict], None] | None = None,
    on_failed: Callable[[str, str], None] | None = None,
    outputs: VideoOutputSets | None = None,
) -> list[dict]:
    """Each video as one Ray task (``run_one_video``; at most ``concurrency`` at once, retried up to
    ``max_retries`` times when its worker dies) → the summaries in the order of ``videos``.
    Needs a connected Ray (``defr.serve.connect.ray_session``).

    outputs: the entered ``VideoOutputSets`` of ``videos`` (a command takes them before Ray starts);
    None: made and entered here. Each video's outputs are swapped in when its task ends.
    A video whose task fails is reported to ``on_failed(video, one line)`` and the others go on;
    then ``VideoJobsFailed`` (with the summaries of those written) is raised."""
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, not {concurrency}")
    if outputs is None:
        with VideoOutputSets(videos, job) as outputs:
            return run_videos_ray(
                videos, job, concurrency, num_gpus, max_retries, progress, on_done, on_failed, outputs
            )
    task = ray.remote(run_one_video).options(num_cpus=1, num_gpus=num_gpus, max_retries=max_retries)
    pending = [str(v) for v in videos]
    running: dict = {}
    summaries: dict[str, dict] = {}
    failures: dict[str, str] = {}
    with tqdm(total=len(pending), desc="video (ray)", unit="video", disable=not progress) as bar:
        while pending or running:
            while pending and len(running) < concurrency:
                video = pending.pop(0)
                running[task.remote(video, job, outputs.staged[video])] = video
            done, _ = ray.wait(list(running), num_returns=1)
            video = running.pop(done[0])
            try:
                summaries[video] = ray.get(done[0])
            except ray.exceptions.RayError as e:
                failures[video] = failure_line(e)
                outputs.finish(video, BatchJobError(failures[video]))
                if on_failed is not None:
                    on_failed(video, failures[video])
            else:
                outputs.finish(video)
                if on_done is not None:
                    on_done(summaries[video])
            bar.update()
    done = [summaries[str(v)] for v in videos if str(v) in summaries]
    if failures:
        raise VideoJobsFailed(done, failures)
    return done
