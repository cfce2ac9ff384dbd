"""``defr eval-events``: a video run's events against annotated ground truth (``defr.video.evaluation``)."""

from __future__ import annotations

from pathlib import Path

import click

from defr.clikit import OutputFolder
from defr.commands import one_line_errors
from defr.commands.options import FiniteFloat
from defr.files import OutputSet, write_json
from defr.video.evaluation import evaluate_run, false_events_line, format_event_table, in_truth_ids, track_identity
from defr.video.event_files import read_events, read_frame_lines, read_truth_lines
from defr.video.timeline import plot_timeline

FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@click.command("eval-events")
@click.option(
    "--frames", "frames_path", type=FILE, required=True, help="The run's per-frame JSONL (defr video --frames)."
)
@click.option("--events", "events_path", type=FILE, required=True, help="The run's events JSONL (defr video --events).")
@click.option("--truth-detections", type=FILE, required=True, help="Annotated boxes per frame (boxes, labels, ids).")
@click.option("--events-truth", type=FILE, required=True, help="Annotated events JSONL (ids of --truth-detections).")
@click.option("--t-iou", default=0.5, show_default=True, type=FiniteFloat(0, 1, min_open=True))
@click.option("--min-iou", default=0.5, show_default=True, type=FiniteFloat(0, 1, min_open=True),
              help="Box IoU that ties a track to an annotated entity in a frame.")  # fmt: skip
@click.option("--out", type=OutputFolder(path_type=Path), required=True,
              help="Folder for events_eval.json, events_table.md and timeline.png.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace those three files in OUT when defr did not write them.")
def eval_events_command(
    frames_path, events_path, truth_detections, events_truth, t_iou, min_iou, out, overwrite
) -> None:
    """Score a run's interaction events against annotated events: precision / recall with identity, a
    per-event table and a timeline picture (one set: all three or none are replaced)."""
    with one_line_errors():
        names = {n: out / n for n in ("events_eval.json", "events_table.md", "timeline.png")}
        inputs = [frames_path, events_path, truth_detections, events_truth]
        with OutputSet(names, inputs=inputs, defaults=names, overwrite=overwrite) as staged:
            report, table = _evaluate(frames_path, events_path, truth_detections, events_truth, t_iou, min_iou, staged)
    e, a = report["events"], report["events_any_track"]
    click.echo(table)
    click.echo(
        f"with identity: precision {e['precision']:.3f}, recall {e['recall']:.3f} ({e['matched']} of "
        f"{e['predicted']} predicted, {e['truth']} true) at tIoU {t_iou}; any track: {a['precision']:.3f} / "
        f"{a['recall']:.3f}"
    )
    click.echo(f"false events: {false_events_line(report['false_events'])}")
    click.echo(f"wrote {out}/events_eval.json, events_table.md, timeline.png")


def _evaluate(frames_path, events_path, truth_detections, events_truth, t_iou, min_iou, staged) -> tuple[dict, str]:
    """Read the four files, score, and write the three outputs to their ``staged`` paths → (report, table)."""
    frames = read_frame_lines(frames_path)
    predicted = read_events(events_path, predicted=True)
    truth_lines = read_truth_lines(truth_detections)
    truth = read_events(events_truth, predicted=False)
    report = evaluate_run(frames, predicted, truth_lines, truth, t_iou=t_iou, min_iou=min_iou)
    relabelled = in_truth_ids(predicted, track_identity(frames, truth_lines, min_iou))
    write_json(report, staged["events_eval.json"], indent=2)
    table = format_event_table(report["table"])
    staged["events_table.md"].write_text(table + "\n")
    plot_timeline(relabelled, truth, staged["timeline.png"], frames=len(frames), t_iou=t_iou)
    return report, table
