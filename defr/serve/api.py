"""The HTTP API of ``defr serve`` as pure functions (no Ray): request bytes → a typed request, a batch of
frames → one ``HOIDetector.detect`` call, results → response bytes.

API (JSON both ways):

- ``POST /v1/detect`` ``{"frames": [{"image": "<base64 PNG or JPEG>", "detections": {"boxes":
  [[x1, y1, x2, y2], ...], "labels": [...], "scores": [...]}}, ...], "label_space": "hico" | "coco80"
  | "coco91" (optional, default hico), "top_k": N (optional)}`` → ``{"results": [entry, ...]}``, one
  entry per frame in order, each exactly the per-image object of ``defr detect``'s results file
  (``ImageResult.to_json``: ``boxes_h``, ``boxes_o`` in the frame's pixels, ``hoi``, ``scores``).
  The ingress reads each image's header (format, size against the limits); the model replica decodes it.
- ``GET /v1/health`` → ``{"status": "ok"}`` when a model replica answers and its model works (503 with
  the reason when its last call failed or its file no longer matches the pinned SHA-256); ``GET
  /v1/model`` → the model's facts (``model_facts``: with the pinned file and its SHA-256); ``GET
  /v1/stats`` → batches formed by the replica that answers.
- Timing (opt-in): a request with the header ``X-Defr-Timing: 1`` gets a ``Server-Timing`` header with the
  milliseconds of each stage in the ingress and the model replica (``TIMING_STAGES``).
- Errors: ``{"error": "<one line>"}`` with 400 (bad input: the runtime's message), 401 (token), 404,
  405, 408 (the body did not arrive within ``body_timeout_s``), 413 (body larger than
  ``Limits.max_body_bytes``), 500 (the model failed: its cause), 503 (no replica could answer, too many
  requests in flight, or the model file changed: retry or see the reason), 504 (no answer within the
  request timeout).

Also here, without Ray: the model pin (``ModelPin``, a file's SHA-256), a replica's health
(``ModelHealth``) and the checks ``defr serve`` makes before Ray starts (``check_exposure``,
``check_port_free``, ``check_device``, ``check_token``).

Detections go through the same parser as ``defr detect``'s input files (``defr.runtime.io``) and the
box rules of ``HOIDetector.detect``; images through ``defr.images.decode_image``. Nothing here restates
a rule of either.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
import ipaddress
import json
import os
import socket
from dataclasses import dataclass

import numpy as np
import torch

from defr.detections import LABEL_SPACES, DetectionError, Detections
from defr.errors import ConfigError, DefrError
from defr.images import ImageInputError, decode_image
from defr.jsonio import JsonInputError, parse_json
from defr.runtime import HOIDetector
from defr.runtime.contract import BackendError
from defr.runtime.io import InputFileError

DETECT_PATH, HEALTH_PATH, MODEL_PATH, STATS_PATH = "/v1/detect", "/v1/health", "/v1/model", "/v1/stats"
GET_PATHS = (HEALTH_PATH, MODEL_PATH, STATS_PATH)
# What a replica's detect step may refuse as the caller's fault (400); anything else is a server error.
INPUT_ERRORS = (ImageInputError, DetectionError, InputFileError)
HASH_CHUNK = 2**20
IMAGE_FORMATS = ("PNG", "JPEG")
TIMING_HEADER = "x-defr-timing"
# The stages of a detect request that ``Server-Timing`` reports, in order (ms): reading the body, parsing it,
# ingress → model replica, waiting there for the batch or the model, the thread hop, the model call, the way
# back, building the answer. Whatever the client sees beyond their sum is HTTP and Serve's proxy.
TIMING_STAGES = ("body", "parse", "hop", "wait", "thread", "model", "back", "answer")


class RequestError(DefrError, ValueError):
    """A request the server refuses or cannot answer: ``status`` (4xx: the caller's fault; 500 / 503: the
    model's) and a one-line message naming the field, limit or cause."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # crosses process boundaries (a replica's outcome): keep the status
        return type(self), (self.status, str(self))


@dataclass(frozen=True)
class Limits:
    """Request limits: body bytes (413), frames per request, boxes per frame, decoded pixels per frame,
    longest side of a frame and decoded pixels per request (400; all read from each image's header before
    it is decoded), and ``/v1/detect`` requests in flight at once (503 above, at once: health and the
    other GETs keep their own room).

    A small PNG can claim a large image: the pixel limits bound what a request makes the server hold
    (3 bytes a pixel: 2**25 pixels are 100 MB) and the side limit its resize cost (a 16,000,000 × 1
    frame costs seconds of CPU though it has few pixels)."""

    max_body_bytes: int = 32 * 2**20
    max_frames: int = 64
    max_boxes: int = 300
    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    max_request_pixels: int = 2**25
    max_in_flight: int = 64

    def __post_init__(self) -> None:
        bad = {k: v for k, v in vars(self).items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
        if bad:
            raise ConfigError(f"request limits must be integers >= 1, got {bad}")


@dataclass(frozen=True)
class Frame:
    """One frame of a request: its image file's bytes (PNG or JPEG, its size checked from the header
    against the limits); its detections (frame pixels, HICO labels), parsed by
    ``defr.detections.Detections.from_dict``; its name in messages (``frames[i]``).

    The image travels to the model replica as its file and is decoded there (``decode``): the file is a
    fraction of the decoded pixels (65 KB against 147 KB for a 256×192 frame), and Ray moves arguments
    over 100 KB through its object store, which cost ~3 ms more per request here (docs/benchmarks.md §8)."""

    data: bytes
    detections: Detections
    name: str

    def decode(self) -> np.ndarray:
        """The image, [H, W, 3] uint8 RGB; ImageInputError naming the frame for a file cut short or corrupt."""
        return np.array(decode_image(self.data, f"{self.name}.image", formats=IMAGE_FORMATS), dtype=np.uint8)


@dataclass(frozen=True)
class DetectRequest:
    frames: tuple[Frame, ...]
    top_k: int | None = None


def check_auth(authorization: str | None, token: str | None) -> None:
    """RequestError 401 unless ``token`` is None or ``authorization`` is ``Bearer <token>`` (the scheme in
    any case, as RFC 7235 says; the token compared in constant time)."""
    if token is None:
        return
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestError(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'")


def check_token(token: str) -> None:
    """ConfigError unless ``token`` can travel in an HTTP header as it is: visible ASCII, no spaces (RFC 6750's
    token characters are a subset); a header cannot carry other characters the same way on every client."""
    if not token or not all("!" <= c <= "~" for c in token):
        raise ConfigError(
            "the token must be non-empty visible ASCII without spaces (it travels in an HTTP header); "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def check_body_size(size: int, limits: Limits) -> None:
    """RequestError 413 naming the limit for a body of ``size`` bytes over ``Limits.max_body_bytes``."""
    if size > limits.max_body_bytes:
        raise RequestError(
            413, f"request body of {size} bytes is over the limit max_body_bytes={limits.max_body_bytes}"
        )


def parse_request(body: bytes, limits: Limits) -> DetectRequest:
    """The body of ``POST /v1/detect`` → ``DetectRequest``; RequestError (400 or 413) naming the field or limit."""
    check_body_size(len(body), limits)
    try:
        doc = parse_json(body, "request body")
    except JsonInputError as e:
        raise RequestError(400, str(e)) from None
    if not isinstance(doc, dict):
        raise RequestError(400, f"request body: expected a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"frames", "label_space", "top_k"})
    if unknown:
        raise RequestError(400, f"request body: unknown keys {unknown} (allowed: frames, label_space, top_k)")
    frames = doc.get("frames")
    if not isinstance(frames, list) or not frames:
        raise RequestError(400, "request body: 'frames' must be a non-empty list of {image, detections}")
    if len(frames) > limits.max_frames:
        raise RequestError(400, f"{len(frames)} frames in one request, over the limit max_frames={limits.max_frames}")
    label_space = doc.get("label_space", "hico")
    if label_space not in LABEL_SPACES:
        raise RequestError(400, f"label_space must be one of {list(LABEL_SPACES)}, not {label_space!r}")
    top_k = doc.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise RequestError(400, f"top_k must be an integer >= 1, not {top_k!r}")
    budget = _PixelBudget(limits)
    return DetectRequest(tuple(_frame(f, i, label_space, budget) for i, f in enumerate(frames)), top_k)


class _PixelBudget:
    """The pixel limits of one request, checked from each image's header before it is decoded."""

    def __init__(self, limits: Limits):
        self.limits, self.used = limits, 0

    def take(self, name: str, width: int, height: int) -> None:
        """ImageInputError (``decode_image`` passes it on; a 400 here) for an image over a pixel limit."""
        limits, pixels = self.limits, width * height
        self.used += pixels
        for over, what in (
            (pixels > limits.max_pixels, f"more than the {limits.max_pixels} allowed (max_pixels)"),
            (max(width, height) > limits.max_side, f"a side over the limit max_side={limits.max_side}"),
            (
                self.used > limits.max_request_pixels,
                f"{self.used} in the request so far, over the limit max_request_pixels={limits.max_request_pixels}",
            ),
        ):
            if over:
                raise ImageInputError(f"{name}: {width}×{height} pixels, {what}")


def _frame(entry, i: int, label_space: str, budget: _PixelBudget) -> Frame:
    name, limits = f"frames[{i}]", budget.limits
    if not isinstance(entry, dict) or set(entry) != {"image", "detections"}:
        raise RequestError(400, f"{name}: must be an object with exactly the keys 'image' and 'detections'")
    if not isinstance(entry["image"], str):
        raise RequestError(400, f"{name}.image: must be a base64 string of a PNG or JPEG file")
    try:
        # line-wrapped base64 (MIME, `base64` without -w0) is accepted: whitespace is dropped, nothing else
        data = base64.b64decode("".join(entry["image"].split()), validate=True)
        _check_header(data, f"{name}.image", budget)
    except binascii.Error as e:
        raise RequestError(400, f"{name}.image: not valid base64 ({e})") from None
    except ImageInputError as e:
        raise RequestError(400, str(e)) from None
    boxes = entry["detections"].get("boxes") if isinstance(entry["detections"], dict) else None
    if isinstance(boxes, list) and len(boxes) > limits.max_boxes:
        raise RequestError(400, f"{name}: {len(boxes)} boxes, over the limit max_boxes={limits.max_boxes}")
    try:
        detections = Detections.from_dict(entry["detections"], label_space, f"{name}.detections")
    except DetectionError as e:
        raise RequestError(400, str(e)) from None
    return Frame(data, detections, name)


class _HeaderChecked(ImageInputError):
    """Stops ``decode_image`` once an image's header passed the limits: the replica decodes it."""


def _check_header(data: bytes, name: str, budget: _PixelBudget) -> None:
    """ImageInputError unless ``data`` is a PNG or JPEG whose header ``decode_image`` reads and whose size
    ``budget`` takes; its pixels are not decoded here (``Frame.decode``, in the model replica)."""

    def take(width: int, height: int) -> None:
        budget.take(name, width, height)
        raise _HeaderChecked(name)

    try:
        decode_image(data, name, formats=IMAGE_FORMATS, check_size=take)
    except _HeaderChecked:
        return


@dataclass(frozen=True)
class FrameOutcome:
    """A model replica's answer for one frame: its results entry or that frame's RequestError, and
    ``time.monotonic()`` stamps (one clock for every process of a Linux machine) of when the frame reached
    the replica, when its model call was given the model (batch formed, model free), when the call began in
    its thread and when it ended."""

    result: dict | RequestError
    arrived: float = 0.0
    batched: float = 0.0
    started: float = 0.0
    done: float = 0.0


def server_timing(marks: dict[str, float], outcome: FrameOutcome) -> str:
    """A ``Server-Timing`` header value (``TIMING_STAGES`` in ms) from the ingress's ``time.monotonic()`` marks
    (``start``, ``body``, ``parse``, ``sent``, ``received``, ``answer``) and the frame that finished last."""
    ms = {
        "body": marks["body"] - marks["start"],
        "parse": marks["parse"] - marks["body"],
        "hop": outcome.arrived - marks["sent"],
        "wait": outcome.batched - outcome.arrived,
        "thread": outcome.started - outcome.batched,
        "model": outcome.done - outcome.started,
        "back": marks["received"] - outcome.done,
        "answer": marks["answer"] - marks["received"],
    }
    return ", ".join(f"{k};dur={1e3 * ms[k]:.2f}" for k in TIMING_STAGES)


def detect_frames(detector: HOIDetector, frames: list[Frame]) -> list[dict | RequestError]:
    """Each frame's image decoded (``Frame.decode``), then one ``detector.detect`` call for frames of many
    requests → per frame its results entry (``ImageResult.to_json``) or the RequestError of that frame
    alone: 400 for an image that does not decode or an input the runtime refuses, 500 naming the cause
    when the model itself fails (``BackendError``: NaN logits, a backend that cannot run).

    A batch mixes callers, so one caller's bad frame must not fail the others: when the batch call
    refuses an input or fails, each frame is run alone (the results do not depend on the batch).
    """
    outcomes: list[dict | RequestError | None] = [None] * len(frames)
    images: dict[int, np.ndarray] = {}
    for i, frame in enumerate(frames):
        try:
            images[i] = frame.decode()
        except ImageInputError as e:  # a file cut short or corrupt behind a header that read
            outcomes[i] = RequestError(400, str(e))
    if images:
        ok = list(images)
        try:
            results = detector.detect(
                [images[i] for i in ok], [frames[i].detections for i in ok], names=[frames[i].name for i in ok]
            )
            for i, result in zip(ok, results, strict=True):
                outcomes[i] = result.to_json()
        except (*INPUT_ERRORS, BackendError):
            for i in ok:
                outcomes[i] = _detect_one(detector, frames[i], images[i])
    return outcomes


def _detect_one(detector: HOIDetector, frame: Frame, image: np.ndarray) -> dict | RequestError:
    try:
        return detector.detect([image], [frame.detections], names=[frame.name])[0].to_json()
    except INPUT_ERRORS as e:
        return RequestError(400, str(e))
    except BackendError as e:
        return model_error(e)


def model_error(error: Exception) -> RequestError:
    """The 500 of a model that failed, naming its cause (one line)."""
    return RequestError(500, f"the model failed: {type(error).__name__}: {error}")


def response_entries(outcomes: list[dict | RequestError], top_k: int | None) -> list[dict]:
    """Per-frame outcomes of one request → its results entries (best first, at most ``top_k``);
    the first frame's RequestError is raised for the whole request."""
    for outcome in outcomes:
        if isinstance(outcome, RequestError):
            raise outcome
    return [{k: v[:top_k] for k, v in entry.items()} for entry in outcomes]


def json_body(obj) -> bytes:
    """Compact JSON; ValueError for NaN or inf (not JSON: no answer may carry them)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def error_body(message: str) -> bytes:
    """``{"error": "<one line>"}``."""
    return json_body({"error": " ".join(str(message).split())})


def check_exposure(host: str, token: str | None, no_auth: bool) -> None:
    """ConfigError for a bind address other than loopback without a token, unless ``no_auth`` says so."""
    if token is not None or no_auth or is_loopback(host):
        return
    raise ConfigError(
        f"--host {host} would expose the API beyond this machine without a token: give --token TOKEN "
        "(clients send 'Authorization: Bearer TOKEN'), or --no-auth if a proxy in front checks callers"
    )


def check_port_free(host: str, port: int) -> None:
    """ConfigError naming ``--port`` when ``host:port`` cannot be bound (in use, or not an address here)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP proxy binds it
        try:
            probe.bind((host, port))
        except OSError as e:
            in_use = e.errno == errno.EADDRINUSE
            why = "is in use (another defr serve?)" if in_use else f"cannot be bound ({e.strerror})"
            raise ConfigError(f"--port {port}: {host}:{port} {why}; pick another --port or --host") from None


def check_device(device: str) -> None:
    """ConfigError naming ``--device`` for a string torch does not take or a CUDA device this machine lacks."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: torch sees no CUDA GPU on this machine; use --device cpu")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ModelPin:
    """The served model file as it was when ``defr serve`` started: every replica checks its file against it."""

    path: str
    sha256: str
    size: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> ModelPin:
        """The pin of ``path`` now (OSError if it cannot be read)."""
        return cls(str(path), file_sha256(path), os.path.getsize(path))

    def check(self) -> None:
        """ModelChangedError (one line, naming the file and both digests) unless the file still matches."""
        try:
            now = file_sha256(self.path)
        except OSError as e:
            raise ModelChangedError(f"{self.path}: cannot read the pinned model file ({e})") from None
        if now != self.sha256:
            raise ModelChangedError(
                f"{self.path} changed since defr serve started (SHA-256 {now[:12]}..., pinned {self.sha256[:12]}...): "
                "this replica refuses to serve it; restart defr serve to serve the new file"
            )


class ModelChangedError(DefrError, RuntimeError):
    """A replica's model file no longer matches the pinned SHA-256: it refuses to serve (503)."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ModelHealth:
    """What ``GET /v1/health`` says of one replica: ok until a call fails; failing while its calls fail (the
    last one's cause), ok again after one succeeds; refused for good when its file broke the pin."""

    def __init__(self, refused: str | None = None):
        self.refused, self.failing = refused, None

    def record(self, outcomes: list[dict | RequestError]) -> None:
        errors = [o for o in outcomes if isinstance(o, RequestError) and o.status >= 500]
        if errors and len(errors) == len(outcomes):
            self.failing = str(errors[0])
        elif len(errors) < len(outcomes):
            self.failing = None

    def answer(self) -> tuple[int, dict]:
        """(status, body) of ``GET /v1/health``: 200 ``{"status": "ok"}`` or 503 ``{"error": reason}``."""
        reason = self.refused or self.failing
        return (503, {"error": f"model replica unhealthy: {reason}"}) if reason else (200, {"status": "ok"})


def model_facts(detector: HOIDetector, pin: ModelPin | None = None) -> dict:
    """What ``GET /v1/model`` answers: classes, input size, mask mode, backend and precision, and the
    pinned file (path, SHA-256, bytes) the replica checked before loading."""
    meta = detector.meta
    facts = {
        "classes": len(meta.class_names),
        "class_names": list(meta.class_names),
        "image_size": meta.image_size,
        "patch_size": meta.patch_size,
        "mask_mode": detector.backend.mask_mode,
        "backend": detector.backend.name,
        "precision": detector.backend.precision,
        "top_k": detector.top_k,
    }
    if pin is not None:
        facts["file"] = {"path": pin.path, "sha256": pin.sha256, "bytes": pin.size}
    return facts
