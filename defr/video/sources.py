"""Frame sources: a video file or stream URL (PyAV), a folder of images, or any iterable of frames.

Every source is an iterable of ``Frame`` (decoded) or ``Skipped`` (a frame that could not be
decoded: counted, never silently lost) in frame order, with ``name``, ``fps`` and ``total`` (frames,
when the container says; None for streams and plain iterables).

Frames are numbered by decode order: the n-th item a source yields (a decoded frame, or a packet
that failed to decode) is frame n, from 0. ``time_s`` is the frame's presentation timestamp in
seconds from the stream's start (``(pts - start) · time_base``), so a variable frame rate or a gap
after a corrupt region moves the times, never the numbers; a frame without a timestamp gets the
previous frame's time + 1 / fps. A precomputed detections file by frame number is matched by this
decode-order number. Folders and iterables: frame n is the n-th image, at n / fps seconds.

Images in a folder are decoded by ``defr.images`` (the decoder of ``defr detect``: 16-bit images
scaled to 8 bits, alpha composited onto white, mode F refused), so a folder frame gives the pixels
``detect`` gives for the same file.

What cannot go on raises ``VideoError`` naming the source: a file that is not a readable video, a
container without a video stream, a demuxer error mid-stream, an image in a folder that PIL refuses
as a possible decompression bomb (the frames before it are processed and written). A packet that
fails to decode, an unreadable image in a folder, or an iterable item that is not an image become
``Skipped``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from defr.images import ImageInputError, to_rgb
from defr.optional import import_av
from defr.video.errors import VideoError
from defr.video.records import Frame, FrameImage, Skipped

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FPS = 30.0  # frame rate assumed for image folders and iterables when none is given


class FrameSource(Protocol):
    name: str
    fps: float
    total: int | None

    def __iter__(self) -> Iterator[Frame | Skipped]: ...


def open_source(source, fps: float | None = None) -> FrameSource:
    """A ``FrameSource`` for ``source``: a video file or URL (``scheme://...``), a folder of images,
    or an iterable of frames (H×W×3 uint8 arrays, PIL images, [3, H, W] tensors).

    fps: the frame rate of folders and iterables (default 30), or a video's when its container has none.
    Raises ``VideoError`` for a path that does not exist or a file that is not a readable video.
    """
    if fps is not None and not fps > 0:
        raise VideoError(f"fps must be > 0, not {fps}")
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if "://" in text:
            return VideoFileSource(text, fps)
        path = Path(text)
        if path.is_dir():
            return ImageFolderSource(path, fps or DEFAULT_FPS)
        if not path.is_file():
            raise VideoError(f"{path}: no such video file or image folder")
        return VideoFileSource(text, fps)
    if isinstance(source, Iterable):
        return IterableSource(source, fps or DEFAULT_FPS)
    raise VideoError(f"expected a video path, URL, image folder or an iterable of frames, got {type(source).__name__}")


class VideoFileSource:
    """A video file or stream URL decoded with PyAV (RGB frames, H×W×3 uint8)."""

    def __init__(self, location: str, fps: float | None = None):
        self.name = location
        av = import_av()
        try:
            with av.open(location) as container:
                if not container.streams.video:
                    raise VideoError(f"{location}: no video stream in this file")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(fps or rate or DEFAULT_FPS)
                self.total = int(stream.frames) or None
        except av.error.FFmpegError as e:
            raise VideoError(f"{location}: not a readable video ({_first_line(e)})") from None

    def __iter__(self) -> Iterator[Frame | Skipped]:
        av = import_av()
        try:
            container = av.open(self.name)
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.name}: not a readable video ({_first_line(e)})") from None
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            base = float(stream.time_base) if stream.time_base else None
            start = stream.start_time or 0
            index, time_s = -1, -1 / self.fps  # the previous item's number and time
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.FFmpegError as e:
                    raise VideoError(
                        f"{self.name}: the stream broke off after frame {index} ({_first_line(e)})"
                    ) from None
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as e:
                    if packet.size == 0:
                        continue  # a failing flush packet holds no frame of its own
                    index, time_s = index + 1, self._time(packet.pts, start, base, time_s)
                    yield Skipped(index, time_s, "decode", f"cannot decode ({_first_line(e)})")
                    continue
                for frame in decoded:
                    index, time_s = index + 1, self._time(frame.pts, start, base, time_s)
                    yield Frame(index, time_s, frame.to_ndarray(format="rgb24"))

    def _time(self, pts: int | None, start: int, base: float | None, previous: float) -> float:
        """Seconds of a timestamp from the stream's start; without one, the previous frame's + 1 / fps."""
        if pts is None or base is None:
            return previous + 1 / self.fps
        return (pts - start) * base


class ImageFolderSource:
    """The image files of a folder, sorted by name, as frames at ``fps``."""

    def __init__(self, folder: Path, fps: float):
        self.name, self.fps = str(folder), fps
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        self.total = len(self.paths)

    def __iter__(self) -> Iterator[Frame | Skipped]:
        for i, path in enumerate(self.paths):
            try:
                with Image.open(path) as image:
                    rgb = np.array(to_rgb(image, path.name))
            except Image.DecompressionBombError as e:
                raise VideoError(
                    f"{path}: refused as a possible decompression bomb ({_first_line(e)}); "
                    "remove it from the folder or shrink it"
                ) from None
            except ImageInputError as e:
                yield Skipped(i, i / self.fps, "decode", str(e))
                continue
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
                yield Skipped(i, i / self.fps, "decode", f"{path.name}: unreadable image ({_first_line(e)})")
                continue
            yield Frame(i, i / self.fps, rgb)


class IterableSource:
    """Frames from any iterable: H×W×3 uint8 arrays, PIL images or [3, H, W] tensors (uint8 or float in [0, 1])."""

    def __init__(self, frames: Iterable, fps: float):
        self.frames, self.fps = frames, fps
        self.name = type(frames).__name__
        self.total = len(frames) if isinstance(frames, Sized) else None

    def __iter__(self) -> Iterator[Frame | Skipped]:
        for i, item in enumerate(self.frames):
            try:
                yield Frame(i, i / self.fps, check_image(item))
            except VideoError as e:
                yield Skipped(i, i / self.fps, "decode", str(e))


def check_image(item) -> FrameImage:
    """An iterable's item as a frame image; raises ``VideoError`` saying what is wrong with it."""
    if isinstance(item, Image.Image):
        try:
            return np.array(to_rgb(item, "PIL frame"))
        except ImageInputError as e:
            raise VideoError(f"not an image: {e}") from None
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8 or min(item.shape[:2]) < 1:
            raise VideoError(f"not an image: numpy frames must be H×W×3 uint8, got {item.shape} {item.dtype}")
        return item
    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3 or min(item.shape[1:]) < 1:
            raise VideoError(f"not an image: tensor frames must be [3, H, W], got {list(item.shape)}")
        if item.dtype != torch.uint8 and not item.is_floating_point():
            raise VideoError(f"not an image: tensor frames must be uint8 or float, got {item.dtype}")
        return item
    raise VideoError(f"not an image: expected an array, PIL image or tensor, got {type(item).__name__}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
