"""Stream outputs: an annotated video (PyAV) and JSONL files whose lines are always whole.

``JsonlWriter`` writes one JSON object a line, each line with one ``os.write`` (no buffer: readers
see it at once). Whatever stops the run (Ctrl-C, a crash, a killed process), the lines written so
far are whole and valid; a line that fails half-way (disk full) is truncated away before the
error (``OutputError``) is raised.

``VideoWriter`` encodes RGB frames (H.264 in MP4 by default) into a temporary file beside the
target (``.NAME.PID-XXXXXXXX.tmp``); ``close()`` finalises the container and renames it onto the
target with the permissions of any other output (0666 minus the umask), ``discard()`` removes it.
A reader never sees a half-written video under the target name. All frames must have the size of
the first: the encoder cannot change it mid-stream (``VideoError``). ``clean_stale_temporaries``
removes the temporaries of a target that a killed run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from defr.files import process_alive, umask
from defr.optional import import_av
from defr.video.errors import OutputError, VideoError

VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}


def temporary_beside(path: Path) -> Path:
    """A new empty file beside ``path`` to write it under: ``.NAME.PID-XXXXXXXX.tmp`` (the process id
    tells ``clean_stale_temporaries`` whether its writer still runs)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` (``.NAME.*.tmp``) left by runs that no longer run → those removed.

    One whose name carries a process id (``temporary_beside``) is kept while that process lives;
    one without (``defr.files.atomic_path``'s, which lives for one write) is removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    prefix, suffix = f".{path.name}.", ".tmp"
    for tmp in path.parent.iterdir():
        name = tmp.name
        if not (name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix)):
            continue
        pid, dash, _ = name[len(prefix) : -len(suffix)].partition("-")
        if dash and pid.isdigit() and process_alive(int(pid)):
            continue
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class JsonlWriter:
    """One JSON object a line to ``path`` (replaced), each line written whole or not at all."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._size = 0
        self.lines = 0

    def write(self, obj: dict) -> None:
        """Append ``obj`` as one line; ``OutputError`` (the line truncated away) if it cannot be written."""
        data = memoryview((json.dumps(obj, default=float) + "\n").encode())
        try:
            while data:  # one write; a short one (a file-size limit) continues where it stopped
                data = data[os.write(self._fd, data) :]
        except OSError as e:
            with contextlib.suppress(OSError):  # a partial line must not stay; the error below is the news
                os.ftruncate(self._fd, self._size)
                os.lseek(self._fd, self._size, os.SEEK_SET)
            raise OutputError(
                f"{self.path}: cannot write line {self.lines + 1} ({e.strerror or e}); "
                f"it holds the {self.lines} whole lines before it"
            ) from None
        self._size = os.lseek(self._fd, 0, os.SEEK_CUR)
        self.lines += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
        self._tmp: Path | None = temporary_beside(self.path)
        fmt = VIDEO_CONTAINERS.get(self.path.suffix.lower(), "mp4")
        try:
            self._container = self.av.open(str(self._tmp), "w", format=fmt)
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
        try:
            for packet in self._stream.encode(out):
                self._container.mux(packet)
        except self.av.error.FFmpegError as e:
            raise OutputError(f"{self.path}: cannot write frame {self.frames} ({e})") from None
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
        except self.av.error.FFmpegError as e:
            self.discard()
            raise OutputError(f"{self.path}: cannot finish the video ({e}); nothing kept") from None
        except BaseException:
            self.discard()
            raise
        self._container = None
        if self.frames == 0:
            self._tmp.unlink(missing_ok=True)
        else:
            os.chmod(self._tmp, 0o666 & ~umask())  # mkstemp made it owner-only
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
