"""Stream outputs: an annotated video (PyAV) and line-flushed JSONL files.

``JsonlWriter`` writes one JSON object a line and flushes each line: whatever stops the run
(Ctrl-C, a crash, a killed process), the lines written so far are whole and valid.

``VideoWriter`` encodes RGB frames (H.264 in MP4 by default) into a temporary file beside the
target; ``close()`` finalises the container and renames it onto the target, ``discard()`` removes
it. A reader never sees a half-written video under the target name. All frames must have the size
of the first: the encoder cannot change it mid-stream (``VideoError``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from defr.video.errors import VideoError
from defr.video.optional import import_av


class JsonlWriter:
    """One JSON object a line to ``path`` (replaced), flushed per line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w")  # noqa: SIM115 - closed by close()
        self.lines = 0

    def write(self, obj: dict) -> None:
        self._file.write(json.dumps(obj, default=float) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """RGB frames (H×W×3 uint8, all of one size) → a video file at ``fps``.

    codec: an FFmpeg encoder (``libx264`` default, ``mpeg4`` where x264 is missing); the container
    follows the file's suffix (``.mp4``, ``.mkv``, ``.avi``, ...). Odd frame sizes are padded by one
    pixel (yuv420p needs even sides).
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: str | None = None, crf: int = 23):
        self.av = import_av()
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.codec = codec or ("libx264" if "libx264" in self.av.codecs_available else "mpeg4")
        self.crf = crf
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self._tmp = Path(tmp)
        fmt = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}
        try:
            self._container = self.av.open(tmp, "w", format=fmt.get(self.path.suffix.lower(), "mp4"))
        except self.av.error.FFmpegError as e:
            self._tmp.unlink(missing_ok=True)
            raise VideoError(f"{self.path}: cannot write a video here ({e})") from None
        self._stream = None
        self._closed: Path | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append one H×W×3 uint8 RGB frame; ``VideoError`` if its size differs from the first frame's."""
        h, w = frame.shape[:2]
        if self.size is None:
            self._open_stream(w, h)
        elif (w, h) != self.size:
            raise VideoError(
                f"{self.path}: frame {self.frames} is {w}×{h} but the video is {self.size[0]}×{self.size[1]}; "
                "a video cannot change size mid-stream (write the frames without --out, or resize them)"
            )
        padded = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else frame
        out = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")
        for packet in self._stream.encode(out):
            self._container.mux(packet)
        self.frames += 1

    def _open_stream(self, w: int, h: int) -> None:
        self.size = (w, h)
        self._stream = self._container.add_stream(self.codec, rate=self.fps)
        self._stream.width, self._stream.height = w + w % 2, h + h % 2
        self._stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            self._stream.options = {"preset": "veryfast", "crf": str(self.crf)}

    def close(self) -> Path | None:
        """Finalise and move the video onto its path → the path (None if no frame was written: nothing kept)."""
        if self._container is None:
            return self._closed
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        except BaseException:
            self.discard()
            raise
        self._container = None
        if self.frames == 0:
            self._tmp.unlink(missing_ok=True)
        else:
            os.replace(self._tmp, self.path)
            self._closed = self.path
        self._tmp = None
        return self._closed

    def discard(self) -> None:
        """Drop the partial video (nothing is left under the target name or beside it)."""
        if self._container is not None:
            with contextlib.suppress(Exception):  # the file is removed anyway
                self._container.close()
            self._container = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
