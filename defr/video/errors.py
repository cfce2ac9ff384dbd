"""Errors of the video package, all ``DefrError``s; a class only where a caller handles it differently.

``VideoError``: a source, detector or file that cannot be used (unreadable or corrupt container, no frames,
a frame size the output video cannot take, two outputs that are one file, an image that is a possible
decompression bomb, an object detector that cannot be built or whose output cannot be used, an events,
frames or ground-truth file that cannot be evaluated). ``OutputError``: an output that cannot be written
any further (a full disk, a file-size limit, a vanished folder): the run records it and still finalises
its other outputs. Frames that can be skipped are not errors: the pipeline counts them
(``defr.video.stats``).
"""

from __future__ import annotations

from defr.errors import DefrError


class VideoError(DefrError, ValueError):
    """A video source or output that cannot be used; the message names it and what to do."""


class OutputError(DefrError, OSError):
    """An output file that could not be written (disk full, ...); names the file and what it still holds."""
