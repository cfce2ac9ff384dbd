"""Errors of the video package: one class per failure domain, all ``DefrError``s.

``VideoError``: a source or output that cannot go on (unreadable or corrupt container, no frames, a
frame size the output video cannot take, a missing optional package). ``DetectorError``: an object
detector that cannot be built or whose output cannot be used (missing weights, a precomputed
detections file without an entry for a frame). Frames that can be skipped are not errors: the
pipeline counts them (``defr.video.stats``).
"""

from __future__ import annotations

from defr.errors import DefrError


class VideoError(DefrError, ValueError):
    """A video source or output that cannot be used; the message names it and what to do."""


class DetectorError(DefrError, ValueError):
    """An object detector that cannot be built, or a detections file that cannot be read; names the file or model."""
