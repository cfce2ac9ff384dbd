"""HOI on video: frame sources, object detector adapters, tracking, temporal smoothing, events, annotated video.

``HOIStream(detector, hoi, batch=8).run(source)`` yields one ``FrameResult`` per frame, in order;
``VideoRun`` (or ``run_video``) adds the outputs (annotated video, frames / events JSONL, summary). PyAV,
supervision and trackers are the ``video`` extra (``pip install "defr[video]"``), imported only
where used. See docs/video.md.
"""

from defr.video.detectors import (
    DEFAULT_DETECTOR,
    ObjectDetector,
    PrecomputedDetector,
    SupervisionDetector,
    TorchvisionDetector,
    UltralyticsDetector,
    build_torchvision_detector,
    detections_from_supervision,
    detections_from_ultralytics,
    make_detector,
)
from defr.video.errors import OutputError, VideoError
from defr.video.events import EventConfig, EventDetector
from defr.video.pipeline import HOIStream, StreamConfig
from defr.video.records import Frame, FrameResult, Interaction, Skipped
from defr.video.run import StreamInterrupted, Summary, VideoOutputs, VideoRun, run_video
from defr.video.scoring import evaluate_events
from defr.video.smoothing import ScoreSmoother, SmoothingConfig
from defr.video.sources import open_source
from defr.video.tracking import ObjectTracker, TrackerConfig

__all__ = [
    "DEFAULT_DETECTOR",
    "EventConfig",
    "EventDetector",
    "Frame",
    "FrameResult",
    "HOIStream",
    "Interaction",
    "ObjectDetector",
    "ObjectTracker",
    "OutputError",
    "PrecomputedDetector",
    "ScoreSmoother",
    "Skipped",
    "SmoothingConfig",
    "StreamConfig",
    "StreamInterrupted",
    "Summary",
    "SupervisionDetector",
    "TorchvisionDetector",
    "TrackerConfig",
    "UltralyticsDetector",
    "VideoError",
    "VideoOutputs",
    "VideoRun",
    "build_torchvision_detector",
    "detections_from_supervision",
    "detections_from_ultralytics",
    "evaluate_events",
    "make_detector",
    "open_source",
    "run_video",
]
