"""``DetectClient``: the HTTP API of ``defr serve`` from Python (standard library only; every call has a timeout).

A 503 (no replica could answer: one died and Serve is restarting it), a 504 (no answer within the
server's request timeout, e.g. while a replica restarts on a loaded machine), a 500 that is not the
API's JSON (Ray Serve's own plain-text 500 while its ingress restarts) or a refused connection is
retried up to ``retries`` times with a growing pause; anything else raises ``ServeError`` with the
server's one-line message and status (a JSON 500 is the model's failure: retrying would not help).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from defr.detections import Detections
from defr.errors import ConfigError, DefrError
from defr.jsonio import parse_json
from defr.serve.api import DETECT_PATH, HEALTH_PATH, MODEL_PATH, STATS_PATH, check_token

RETRIABLE = (503, 504)  # no replica could answer / none answered in time: both say retry


class ServeError(DefrError, RuntimeError):
    """A request ``defr serve`` refused or could not answer; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def encode_image(image, fmt: str = "PNG") -> str:
    """A PIL image or H×W×3 uint8 array → base64 text of a PNG (lossless: the server sees the same pixels) or JPEG."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def detections_json(detections: Detections | dict) -> dict:
    """Detections, or a dict {"boxes", "labels", "scores"} of arrays, tensors or lists → plain JSON lists."""
    if isinstance(detections, Detections):
        return detections.to_dict()
    return {k: np.asarray(detections[k]).tolist() for k in ("boxes", "labels", "scores")}


@dataclass
class DetectClient:
    """Calls ``defr serve`` at ``url`` (``http://127.0.0.1:8000``).

    token: sent as ``Authorization: Bearer``; timeout_s: per HTTP call; retries: extra tries after a 503 / 504
    or a refused connection, ``backoff_s`` apart (doubling).
    """

    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(f"url {self.url!r}: expected http://HOST:PORT (or https:// behind a TLS proxy)")

    def detect(
        self,
        images: Sequence,
        detections: Sequence[Detections | dict],
        label_space: str = "hico",
        top_k: int | None = None,
    ) -> list[dict]:
        """Frames (PIL or H×W×3 uint8; sent as PNG) with one detections dict each → one results entry per frame."""
        body = {
            "frames": [
                {"image": im if isinstance(im, str) else encode_image(im), "detections": detections_json(d)}
                for im, d in zip(images, detections, strict=True)
            ],
            "label_space": label_space,
        }
        if top_k is not None:
            body["top_k"] = top_k
        return self.request("POST", DETECT_PATH, json.dumps(body).encode())["results"]

    def health(self) -> dict:
        return self.request("GET", HEALTH_PATH)

    def model(self) -> dict:
        return self.request("GET", MODEL_PATH)

    def stats(self) -> dict:
        return self.request("GET", STATS_PATH)

    def request(self, method: str, path: str, body: bytes | None = None) -> dict:
        """One API call, retried on 503 / 504 / refused connections; the parsed JSON answer or ServeError."""
        pause, attempt = self.backoff_s, 0
        while True:
            try:
                status, data = self._once(method, path, body)
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected) as e:
                status, data = 0, f"cannot reach {self.url} ({type(e).__name__})".encode()
            except TimeoutError:
                raise ServeError(0, f"{method} {self.url}{path}: no answer within {self.timeout_s} s") from None
            except ssl.SSLError as e:
                raise ServeError(
                    0, f"{self.url}: TLS failed ({e.reason or e}); defr serve speaks plain HTTP: use http://"
                ) from None
            if status == 200:
                return parse_json(data, f"answer of {self.url}{path}")
            message = _message(data)
            retriable = status in (0, *RETRIABLE) or (status == 500 and message is None)
            if not retriable or attempt >= self.retries:
                raise ServeError(status, message or data[:200].decode(errors="replace"))
            attempt += 1
            time.sleep(pause)
            pause *= 2

    def _once(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        parts = urlsplit(self.url)
        conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_type(parts.hostname, parts.port, timeout=self.timeout_s)
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, parts.path.rstrip("/") + path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _message(data: bytes) -> str | None:
    """The API's one-line ``error`` of an answer; None for anything else (a proxy's plain text)."""
    try:
        return str(parse_json(data, "answer")["error"])
    except (ValueError, KeyError, TypeError):
        return None
