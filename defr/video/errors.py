"""Errors of the video package: one class per failure domain, all ``DefrError``s.

``VideoError``: a source or output that cannot be used (unreadable or corrupt container, no frames,
a frame size the output video cannot take, two outputs that are one file, an image that is a
possible decompression bomb). ``OutputError``: an output that cannot be written any further (a full
disk, a file-size limit, a vanished folder). ``DetectorError``: an object detector that cannot be
built or whose output cannot be used (missing weights, a precomputed detections file without an
entry for a frame). Frames that can be skipped are not errors: the pipeline counts them
(``defr.video.stats``).
"""

from __future__ import annotations

from defr.errors import DefrError


class VideoError(DefrError, ValueError):
    """A video source or output that cannot be used; the message names it and what to do."""


class OutputError(DefrError, OSError):
    """An output file that could not be written (disk full, ...); names the file and what it still holds."""


class DetectorError(DefrError, ValueError):
    """An object detector that cannot be built, or a detections file that cannot be read; names the file or model."""
