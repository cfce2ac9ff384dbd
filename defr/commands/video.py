"""``defr video``: HOI detection on a video, a stream URL or an image folder (``defr.video.run_video``)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import click

from defr.commands import one_line_errors
from defr.commands.options import (
    DEVICE_OPTION,
    MODEL_OPTIONS,
    RAY_OPTION,
    FiniteFloat,
    model_inputs,
    model_request,
)
from defr.detections import DEFAULT_LABEL_SPACE, LABEL_SPACES
from defr.errors import DefrError
from defr.files import OutputSet
from defr.runtime import load_detector
from defr.video import (
    EventConfig,
    SmoothingConfig,
    StreamConfig,
    StreamInterrupted,
    VideoOutputs,
    make_detector,
    run_video,
)


def _summary_path(out: Path | None, events: Path | None, frames: Path | None) -> Path:
    first = next(p for p in (out, events, frames) if p is not None)
    return first.with_name(f"{first.name.split('.')[0]}.summary.json")


def _outputs(out, events, frames, summary) -> list[tuple[str, Path]]:
    named = {"--out": out, "--events": events, "--frames": frames, "--summary": summary}
    return [(name, path) for name, path in named.items() if path is not None]


@click.command("video")
@click.argument("source", metavar="INPUT")
@click.argument("more", nargs=-1, metavar="[INPUT]...")
@MODEL_OPTIONS
@click.option(
    "--detector",
    default="torchvision:fasterrcnn_resnet50_fpn",
    show_default=True,
    help="Object detector: torchvision:NAME, ultralytics:WEIGHTS or detections:FILE (JSON/JSONL by frame).",
)
@click.option(
    "--detector-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Weights file of a torchvision:NAME detector (else torch's local cache).",
)
@click.option(
    "--label-space",
    type=click.Choice(LABEL_SPACES),
    help=f"Labels of a detections:FILE (default {DEFAULT_LABEL_SPACE}) or a YOLO model (default coco80).",
)
@click.option("--out", type=click.Path(path_type=Path), help="Annotated video to write (.mp4).")
@click.option("--events", type=click.Path(path_type=Path), help="Interaction events JSONL to write.")
@click.option("--frames", type=click.Path(path_type=Path), help="Per-frame results JSONL to write.")
@click.option(
    "--summary",
    type=click.Path(path_type=Path),
    help="Run summary JSON [default: NAME.summary.json beside the first output].",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a default-named output that exists and was not written by defr (the summary; with --ray, "
    "every STEM.* output).",
)
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1), help="Frames per batch.")
@click.option(
    "--max-latency-ms",
    default=100.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="A batch waits at most this long after its first frame.",
)
@DEVICE_OPTION
@click.option("--fps", type=FiniteFloat(0.001, 1000), help="Frame rate of an image folder (default 30).")
@click.option("--top-k", type=click.IntRange(min=1), help="Keep at most N triplets per frame.")
@click.option("--smoothing", default="ema", show_default=True, type=click.Choice(["ema", "window", "none"]))
@click.option("--alpha", default=0.5, show_default=True, help="EMA weight of the newest score.")
@click.option("--window", default=5, show_default=True, help="Frames of the window average.")
@click.option("--on", "on", default=0.5, show_default=True, help="Smoothed score that opens an event.")
@click.option("--off", "off", default=0.3, show_default=True, help="Smoothed score under which it closes.")
@click.option("--min-event-frames", default=1, show_default=True, help="Drop shorter events.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@RAY_OPTION
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(min=1), help="--ray: videos at once.")
def video_command(
    source,
    more,
    checkpoint,
    model_file,
    detector,
    detector_weights,
    label_space,
    out,
    events,
    frames,
    summary,
    overwrite,
    batch,
    max_latency_ms,
    device,
    precision,
    mask_mode,
    fps,
    top_k,
    smoothing,
    alpha,
    window,
    on,
    off,
    min_event_frames,
    progress,
    ray_address,
    concurrency,
    runtime,
) -> None:
    """Detect human-object interactions in INPUT (a video file, stream URL or image folder).

    Writes an annotated video (--out), interaction events (--events), per-frame results (--frames)
    and a summary. Ctrl-C (SIGTERM alike) finalises what was written so far and exits with code 130
    (143); a killed run leaves a summary saying "complete": false.

    With --ray, INPUT... are videos or folders of them, one Ray task each; --out, --events, --frames
    and --summary are then folders that get STEM.mp4, STEM.events.jsonl, STEM.frames.jsonl and
    STEM.summary.json, and "{stem}" in --detector becomes each video's stem.
    """
    with one_line_errors():
        model, options = model_request(checkpoint, model_file, runtime, precision, mask_mode, device=device)
    if out is None and events is None and frames is None:
        raise click.UsageError("give at least one output: --out, --events or --frames")
    if more and ray_address is None:
        raise click.UsageError("several INPUTs need --ray (one Ray task per video)")
    with one_line_errors():
        config = StreamConfig(
            batch=batch,
            max_latency_ms=max_latency_ms,
            smoothing=SmoothingConfig(method=smoothing, alpha=alpha, window=window),
            events=EventConfig(on=on, off=off, min_frames=min_event_frames),
        )
    if ray_address is not None:
        if Path(ray_address).exists():
            raise click.UsageError(f"--ray took {ray_address} as the address: write --ray=ADDRESS or --ray local")
        job_options = {"device": device, "weights": detector_weights, "label_space": label_space}
        load = {"options": options, "top_k": top_k}
        with one_line_errors():
            from defr.serve.batch import VideoJob, VideoOutputSets, list_videos, run_videos_ray  # imports Ray
            from defr.serve.connect import ray_session

            folders = {"video_dir": out, "frames_dir": frames, "events_dir": events, "summary_dir": summary}
            inputs = tuple(str(p) for p in (detector_weights, *model_inputs(model)) if p is not None)
            job = VideoJob(
                str(model), load, detector, job_options, config, fps, **folders, inputs=inputs, overwrite=overwrite
            )
            videos = list_videos([source, *more])
            # every video's outputs checked and taken before Ray starts: a refusal costs no work
            with VideoOutputSets(videos, job) as outputs, ray_session(ray_address):
                done = run_videos_ray(
                    videos,
                    job,
                    concurrency,
                    1 if device.startswith("cuda") else 0,
                    progress=progress,
                    on_failed=lambda video, why: click.echo(f"{video}: failed: {why}", err=True),
                    outputs=outputs,
                )
        click.echo(f"{len(done)} videos, {sum(s['frames'] for s in done)} frames; outputs in {out or frames or events}")
        return
    folders = [f"{name} {path}" for name, path in _outputs(out, events, frames, summary) if path.is_dir()]
    if folders:  # folders are for --ray (one file per video in each)
        raise click.UsageError(f"{folders[0]} is a folder: without --ray, outputs are files")
    defaults = [] if summary is not None else ["--summary"]
    summary = summary or _summary_path(out, events, frames)
    kind, _, detections_file = detector.partition(":")
    frame_files = list(Path(source).iterdir()) if Path(source).is_dir() else []  # an image folder's frames
    inputs = [source, *frame_files, detector_weights, *model_inputs(model)]
    inputs += [detections_file] if kind == "detections" else []
    with ExitStack() as written:
        try:  # before anything is loaded or written: refused outputs, a default-named summary not ours, a 2nd writer
            outputs = VideoOutputs(video=out, frames=frames, events=events, summary=summary)
            labelled = {"--out": out, "--frames": frames, "--events": events, "--summary": summary}
            written.enter_context(OutputSet(labelled, inputs, defaults, overwrite, stream=True))
        except (DefrError, OSError) as e:
            raise click.ClickException(str(e)) from None
        result = _run(source, detector, detector_weights, label_space, device, model, options, top_k, outputs,
                      config, fps, progress)  # fmt: skip
    named = [str(p) for p in (out, events, frames) if p is not None]
    skipped = f"; {result.skipped} frame(s) skipped" if result.skipped else ""
    click.echo(
        f"{result.frames} frames at {result.fps:.1f} fps, {result.events} events{skipped}; "
        f"wrote {', '.join(named)}, {summary}"
    )


def _run(source, detector, weights, label_space, device, model, options, top_k, outputs, config, fps, progress):
    """Load the detectors and run the video → its ``Summary``; errors as one line naming the summary."""
    summary = outputs.summary
    try:
        objects = make_detector(detector, device=device, weights=weights, label_space=label_space)
        hoi = load_detector(model, options, top_k=top_k)
        return run_video(source, objects, hoi, outputs, config, fps=fps, progress=progress)
    except StreamInterrupted as e:
        click.echo(f"interrupted after {e.summary.frames} frames ({e}); outputs finalised, summary {summary}", err=True)
        raise SystemExit(128 + e.signum) from None
    except (DefrError, OSError) as e:
        raise click.ClickException(f"{e} (summary: {summary})" if summary.is_file() else str(e)) from None
