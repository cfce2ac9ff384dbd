"""The video extra's packages (PyAV, supervision, trackers), imported where used behind one helper each.

A missing package raises ``VideoError`` with the exact install command; nothing is installed here.
"""

from __future__ import annotations

import importlib

from defr.video.errors import VideoError

INSTALL = 'pip install "defr[video]"'


def _require(module: str, what: str, install: str = INSTALL):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise VideoError(f"{what} needs the Python package {module.split('.')[0]!r} ({e}); {install}") from None


def import_av():
    """PyAV (FFmpeg bindings): video decoding and encoding."""
    return _require("av", "reading and writing video files")


def import_supervision():
    """supervision: ``Detections``, the box container its trackers and annotators use."""
    return _require("supervision", "tracking and supervision detections")


def import_bytetrack():
    """The ``ByteTrackTracker`` class of Roboflow's ``trackers`` (supervision's ByteTrack moved there)."""
    return _require("trackers", "tracking").ByteTrackTracker


def import_ultralytics():
    """Ultralytics (YOLO); not part of the video extra: it is the user's detector."""
    return _require("ultralytics", "an ultralytics:WEIGHTS detector", install="pip install ultralytics")
