"""The HTTP API of ``defr serve`` as pure functions (no Ray): request bytes → a typed request, a batch of
frames → one ``HOIDetector.detect`` call, results → response bytes.

API (JSON both ways):

- ``POST /v1/detect`` ``{"frames": [{"image": "<base64 PNG or JPEG>", "detections": {"boxes":
  [[x1, y1, x2, y2], ...], "labels": [...], "scores": [...]}}, ...], "label_space": "hico" | "coco80"
  | "coco91" (optional, default hico), "top_k": N (optional)}`` → ``{"results": [entry, ...]}``, one
  entry per frame in order, each exactly the per-image object of ``defr detect``'s results file
  (``ImageResult.to_json``: ``boxes_h``, ``boxes_o`` in the frame's pixels, ``hoi``, ``scores``).
- ``GET /v1/health`` → ``{"status": "ok"}`` when a model replica answers; ``GET /v1/model`` → the
  model's facts (``model_facts``); ``GET /v1/stats`` → batches formed by the replica that answers.
- Errors: ``{"error": "<one line>"}`` with 400 (bad input: the runtime's message), 401 (token), 404,
  405, 413 (body larger than ``Limits.max_body_bytes``), 503 (no replica could answer: retry), 504
  (no answer within the request timeout).

Detections go through the same parser as ``defr detect``'s input files (``defr.runtime.io``) and the
box rules of ``HOIDetector.detect``; images through ``defr.images.decode_image``. Nothing here restates
a rule of either.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
from dataclasses import dataclass

import numpy as np

from defr.detections import LABEL_SPACES, DetectionError, Detections
from defr.errors import ConfigError, DefrError
from defr.images import ImageInputError, decode_image
from defr.jsonio import JsonInputError, parse_json
from defr.runtime import HOIDetector
from defr.runtime.io import InputFileError

DETECT_PATH, HEALTH_PATH, MODEL_PATH, STATS_PATH = "/v1/detect", "/v1/health", "/v1/model", "/v1/stats"
GET_PATHS = (HEALTH_PATH, MODEL_PATH, STATS_PATH)
# What a replica's detect step may refuse as the caller's fault (400); anything else is a server error.
INPUT_ERRORS = (ImageInputError, DetectionError, InputFileError)


class RequestError(DefrError, ValueError):
    """A request the server refuses: ``status`` (4xx) and a one-line message naming the field or limit."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # crosses process boundaries (a replica's outcome): keep the status
        return type(self), (self.status, str(self))


@dataclass(frozen=True)
class Limits:
    """Request limits: body bytes (413), frames per request, boxes per frame and pixels per image (400)."""

    max_body_bytes: int = 32 * 2**20
    max_frames: int = 64
    max_boxes: int = 300
    max_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        bad = {k: v for k, v in vars(self).items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
        if bad:
            raise ConfigError(f"request limits must be integers >= 1, got {bad}")


@dataclass(frozen=True)
class Frame:
    """One frame of a request: image [H, W, 3] uint8 RGB; its detections (frame pixels, HICO labels),
    parsed by ``defr.detections.Detections.from_dict``."""

    image: np.ndarray
    detections: Detections
    name: str


@dataclass(frozen=True)
class DetectRequest:
    frames: tuple[Frame, ...]
    top_k: int | None = None


def check_auth(authorization: str | None, token: str | None) -> None:
    """RequestError 401 unless ``token`` is None or ``authorization`` is ``Bearer <token>`` (constant-time compare)."""
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme != "Bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestError(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'")


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
    return DetectRequest(tuple(_frame(f, i, label_space, limits) for i, f in enumerate(frames)), top_k)


def _frame(entry, i: int, label_space: str, limits: Limits) -> Frame:
    name = f"frames[{i}]"
    if not isinstance(entry, dict) or set(entry) != {"image", "detections"}:
        raise RequestError(400, f"{name}: must be an object with exactly the keys 'image' and 'detections'")
    if not isinstance(entry["image"], str):
        raise RequestError(400, f"{name}.image: must be a base64 string of a PNG or JPEG file")
    try:
        data = base64.b64decode(entry["image"], validate=True)
        image = np.array(
            decode_image(data, f"{name}.image", formats=("PNG", "JPEG"), max_pixels=limits.max_pixels), dtype=np.uint8
        )
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
    return Frame(image, detections, name)


def detect_frames(detector: HOIDetector, frames: list[Frame]) -> list[dict | RequestError]:
    """One ``detector.detect`` call for frames of many requests → per frame its results entry
    (``ImageResult.to_json``) or the RequestError (400) of that frame alone.

    A batch mixes callers, so one caller's bad frame must not fail the others: when the batch call
    refuses an input, each frame is run alone (the results do not depend on the batch).
    """
    images, dets, names = [f.image for f in frames], [f.detections for f in frames], [f.name for f in frames]
    try:
        return [r.to_json() for r in detector.detect(images, dets, names=names)]
    except INPUT_ERRORS:
        pass
    return [_detect_one(detector, f) for f in frames]


def _detect_one(detector: HOIDetector, frame: Frame) -> dict | RequestError:
    try:
        return detector.detect([frame.image], [frame.detections], names=[frame.name])[0].to_json()
    except INPUT_ERRORS as e:
        return RequestError(400, str(e))


def response_entries(outcomes: list[dict | RequestError], top_k: int | None) -> list[dict]:
    """Per-frame outcomes of one request → its results entries (best first, at most ``top_k``);
    the first frame's RequestError is raised for the whole request."""
    for outcome in outcomes:
        if isinstance(outcome, RequestError):
            raise outcome
    return [{k: v[:top_k] for k, v in entry.items()} for entry in outcomes]


def json_body(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def model_facts(detector: HOIDetector) -> dict:
    """What ``GET /v1/model`` answers: classes, input size, mask mode, backend and precision."""
    meta = detector.meta
    return {
        "classes": len(meta.class_names),
        "class_names": list(meta.class_names),
        "image_size": meta.image_size,
        "patch_size": meta.patch_size,
        "mask_mode": detector.backend.mask_mode,
        "backend": detector.backend.name,
        "precision": detector.backend.precision,
        "top_k": detector.top_k,
    }
