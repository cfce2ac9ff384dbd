"""The Ray Serve application of ``defr serve``: an HTTP ingress in front of a batching model deployment.

- ``DefrIngress`` (no model, 0 CPUs): the token, the limits, parsing (``defr.serve.api``), and one call
  per frame to the model deployment, so that the batcher can put frames of different callers (one
  per camera) into one batch.
- ``DefrModel`` (``ServeConfig.replicas`` replicas, each ``num_cpus`` / ``num_gpus``): one
  ``HOIDetector`` opened by the front door, ``HOIDetector.open`` (any model file, runtime and precision:
  ``ServeConfig.options``);
  ``@serve.batch`` collects up to ``max_batch`` frames, waiting at most ``batch_wait_ms`` after the
  first, into one ``HOIDetector.detect`` call (``defr.serve.api.detect_frames``).

A model replica that dies is restarted by Serve; the requests it held fail with 503 and
``Retry-After`` (``DetectClient`` retries them), and no request waits longer than
``request_timeout_s`` (then 504). A restarted replica loads the model file only if it still matches
the SHA-256 pinned when ``defr serve`` started (``ServeConfig.pin``); otherwise it answers 503 with
the reason, so replicas never serve different models. A body must arrive within ``body_timeout_s``
(408), and at most ``Limits.max_in_flight`` detect requests are in the ingress at once (more: 503 at
once), so slow or stalled clients cannot take every slot and ``/v1/health`` keeps answering.

This module imports Ray: only ``defr serve``, ``defr.serve.app`` and the tests import it.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, field

from defr.errors import ConfigError
from defr.optional import import_ray, import_ray_serve, require
from defr.runtime import HOIDetector, ModelOptions
from defr.serve.api import (
    DETECT_PATH,
    GET_PATHS,
    HEALTH_PATH,
    MODEL_PATH,
    TIMING_HEADER,
    DetectRequest,
    Frame,
    FrameOutcome,
    Limits,
    ModelChangedError,
    ModelHealth,
    ModelPin,
    RequestError,
    check_auth,
    check_body_size,
    check_token,
    detect_frames,
    error_body,
    json_body,
    model_facts,
    parse_request,
    response_entries,
    server_timing,
)
from defr.serve.connect import keep_replica_grpc_on_loopback

ray = import_ray()
serve = import_ray_serve()
responses = require("starlette.responses", "defr serve (Ray Serve)", "serve", package="ray[serve]")
keep_replica_grpc_on_loopback()  # each replica imports this module before Serve binds its gRPC server

APP_NAME = "defr"
# The model deployment could not answer: the caller may retry (Serve restarts dead replicas).
UNAVAILABLE = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    serve.exceptions.BackPressureError,
    serve.exceptions.DeploymentUnavailableError,
    serve.exceptions.ReplicaUnavailableError,
)


@dataclass(frozen=True)
class ServeConfig:
    """One ``defr serve`` application.

    model: any file ``HOIDetector.open`` opens; options: how (runtime, precision, mask mode, device:
    ``ModelOptions``, checked when built); replicas: model replicas; max_batch: frames per backend
    call (1 turns batching off); batch_wait_ms: how long a batch waits for more frames after its
    first; top_k: triplets kept per frame; num_cpus / num_gpus: what
    Ray reserves per model replica (a GPU replica needs ``device="cuda"``); token: required bearer
    token (None: none); request_timeout_s: the longest a request may wait for its frames;
    body_timeout_s: the longest its body may take to arrive (408 after); pin: the model file's SHA-256
    that replicas check before loading (None: not checked; ``defr serve`` always pins).
    """

    model: str
    replicas: int = 1
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    options: ModelOptions = field(default_factory=ModelOptions)
    top_k: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    token: str | None = None
    request_timeout_s: float = 60.0
    body_timeout_s: float = 10.0
    limits: Limits = field(default_factory=Limits)
    pin: ModelPin | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.max_batch < 1:
            raise ConfigError(f"replicas and max_batch must be >= 1, not {self.replicas}, {self.max_batch}")
        numbers = {"batch_wait_ms": self.batch_wait_ms, "num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        bad = {k: v for k, v in numbers.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ConfigError(f"{bad} must be finite and >= 0")
        timeouts = {"request_timeout_s": self.request_timeout_s, "body_timeout_s": self.body_timeout_s}
        bad = {k: v for k, v in timeouts.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ConfigError(f"{bad} must be finite and > 0")
        if self.num_gpus > 0 and not self.options.device.startswith("cuda"):
            raise ConfigError(
                f"GPU replicas (num_gpus={self.num_gpus}) need device 'cuda', not {self.options.device!r}"
            )
        if self.token is not None:
            check_token(self.token)

    def load_options(self) -> dict:
        """``HOIDetector.open``'s keywords for this application's model."""
        return {"options": self.options, "top_k": self.top_k}


@serve.deployment(name="DefrModel")
class DefrModel:
    """One ``HOIDetector``; frames of many requests batched into one ``detect`` call. A replica whose file
    breaks the pin loads nothing and answers every call with the reason (503)."""

    def __init__(self, model: str, load: dict, max_batch: int, batch_wait_s: float, pin: ModelPin | None = None):
        self.model_lock = asyncio.Lock()
        self._batch.set_max_batch_size(max_batch)
        self._batch.set_batch_wait_timeout_s(batch_wait_s)
        self.batches = 0
        self.frames = 0
        self.pin, self.detector = pin, None
        try:
            if pin is not None:
                pin.check()
            self.detector = HOIDetector.open(model, **load)
            if pin is not None:
                pin.check()  # the file did not change while it loaded
            self.health = ModelHealth()
        except ModelChangedError as e:
            print(f"defr serve: {e}", flush=True)  # the replica's log; run_server's console says it too
            self.health = ModelHealth(refused=str(e))

    async def detect_frame(self, frame: Frame) -> FrameOutcome:
        """One frame, batched with other callers' frames (``@serve.batch``: up to ``max_batch``, waiting up
        to ``batch_wait_ms`` after the first)."""
        return await self._batch((frame, time.monotonic()))

    async def detect_alone(self, frame: Frame) -> FrameOutcome:
        """One frame at once, no batch wait: the ingress sends this way a frame with no other in flight
        (one stream), whose batch could only wait ``batch_wait_ms`` for company that is not coming."""
        return (await self._run([frame], [time.monotonic()]))[0]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batch(self, items: list[tuple[Frame, float]]) -> list[FrameOutcome]:
        return await self._run([frame for frame, _ in items], [arrived for _, arrived in items])

    async def _run(self, frames: list[Frame], arrived: list[float]) -> list[FrameOutcome]:
        async with self.model_lock:  # a lone frame and a batch take turns: each call gets every core
            batched = time.monotonic()
            if self.detector is None:
                results = [RequestError(503, self.health.refused)] * len(frames)
                return [FrameOutcome(r, a, batched, batched, batched) for r, a in zip(results, arrived, strict=True)]
            self.batches += 1
            self.frames += len(frames)
            # off the event loop, so that the next batch gathers while this one computes
            started, results, done = await asyncio.to_thread(_timed_detect, self.detector, frames)
        self.health.record(results)
        return [FrameOutcome(r, a, batched, started, done) for r, a in zip(results, arrived, strict=True)]

    def check(self) -> tuple[int, dict]:
        """``GET /v1/health`` of this replica: (status, body)."""
        return self.health.answer()

    def facts(self) -> tuple[int, dict]:
        if self.detector is None:
            return self.health.answer()
        return 200, model_facts(self.detector, self.pin)

    def stats(self) -> dict:
        """Batches formed by this replica, with its process and node (tests check placement with them)."""
        return {
            "batches": self.batches,
            "frames": self.frames,
            "mean_batch": self.frames / self.batches if self.batches else None,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }


def _timed_detect(detector, frames: list[Frame]) -> tuple[float, list[dict | RequestError], float]:
    """``detect_frames`` with ``time.monotonic()`` at its start and end (in the thread that runs it)."""
    started = time.monotonic()
    results = detect_frames(detector, frames)
    return started, results, time.monotonic()


# A live replica answers its health check in milliseconds, even mid-batch; one that does not within this is hung
HEALTH_TIMEOUT_S = 2.0
# Room above Limits.max_in_flight for what must keep answering while detect requests fill theirs: health,
# model, stats and the drain call.
GET_ROOM = 64


@serve.deployment(name="DefrIngress", ray_actor_options={"num_cpus": 0})
class DefrIngress:
    """HTTP in, JSON out (``defr.serve.api``): auth, limits, parsing, per-frame fan-out, errors."""

    def __init__(self, model, limits: Limits, token: str | None, timeout_s: float, body_timeout_s: float = 10.0):
        self.model, self.limits, self.token, self.timeout_s = model, limits, token, timeout_s
        self.body_timeout_s = body_timeout_s
        self.in_flight = 0
        self.detecting = 0
        self.frames_out = 0  # frames sent to the model deployment and not answered yet
        self.draining = False

    async def __call__(self, request):
        if self.draining:
            return self._error(503, "defr serve is shutting down; retry", {"Retry-After": "1"})
        self.in_flight += 1
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def drain(self, timeout_s: float) -> int:
        """Refuse new requests (503) and wait up to ``timeout_s`` for those in flight → how many are left.

        Before the application is deleted: Serve's own graceful shutdown stops the model replicas
        while this ingress still waits on frames queued for them."""
        self.draining = True
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return self.in_flight

    async def _answer(self, request):
        try:
            check_auth(request.headers.get("authorization"), self.token)
            path = _api_path(request.scope)
            if path == DETECT_PATH:
                self._method(request, "POST")
                return await self._detect_request(request)
            if path in GET_PATHS:
                self._method(request, "GET")
                if path == HEALTH_PATH:
                    return await self._health()
                call = self.model.facts if path == MODEL_PATH else self.model.stats
                answer = await asyncio.wait_for(call.remote(), self.timeout_s)
                return self._json(*answer) if isinstance(answer, tuple) else self._json(200, answer)
            raise RequestError(404, f"no such path {path}: POST {DETECT_PATH}, GET {', '.join(GET_PATHS)}")
        except RequestError as e:
            return self._error(e.status, str(e))
        except UNAVAILABLE as e:
            return self._error(503, f"no model replica could answer ({type(e).__name__}); retry", {"Retry-After": "1"})
        except asyncio.TimeoutError:
            return self._error(504, f"no answer within request_timeout_s={self.timeout_s}; retry later")
        except Exception as e:  # a bug or a failure of Ray's: still one JSON line, with its cause
            return self._error(500, f"internal error: {_cause(e)}")

    async def _health(self):
        """``GET /v1/health``: the model replica's own answer, or 503 when it gives none within
        ``HEALTH_TIMEOUT_S`` (a replica that hangs, not one that is busy: its model runs in a thread)."""
        deadline = min(self.timeout_s, HEALTH_TIMEOUT_S)
        try:
            return self._json(*await asyncio.wait_for(self.model.check.remote(), deadline))
        except asyncio.TimeoutError:
            late = f"the model replica did not answer its health check within {deadline:g} s"
            return self._error(503, late, {"Retry-After": "1"})

    async def _detect_request(self, request):
        if self.detecting >= self.limits.max_in_flight:
            raise RequestError(503, f"{self.detecting} requests in flight, the limit max_in_flight; retry")
        self.detecting += 1
        marks = {"start": time.monotonic()}
        try:
            try:
                body = await asyncio.wait_for(self._body(request), self.body_timeout_s)
            except asyncio.TimeoutError:
                late = f"the request body did not arrive within body_timeout_s={self.body_timeout_s}"
                raise RequestError(408, late) from None
            marks["body"] = time.monotonic()
            parsed = await asyncio.to_thread(parse_request, body, self.limits)
            marks["parse"] = time.monotonic()
            outcomes = await self._detect(parsed, marks)
            answer = json_body({"results": response_entries([o.result for o in outcomes], parsed.top_k)})
            marks["answer"] = time.monotonic()
            headers = None
            if request.headers.get(TIMING_HEADER, "0") not in ("", "0"):
                headers = {"Server-Timing": server_timing(marks, max(outcomes, key=lambda o: o.done))}
            return responses.Response(answer, status_code=200, media_type="application/json", headers=headers)
        finally:
            self.detecting -= 1

    async def _detect(self, request: DetectRequest, marks: dict[str, float]) -> list[FrameOutcome]:
        # A lone frame goes at once: one frame, no other detect request in the ingress (reading, parsing or
        # waiting) and no frame with the model, so a batch wait could only delay it. A request's several
        # frames, or frames beside others, are batched: streams answered together come back together, and
        # sending the first of them alone would split them into batches of one from then on.
        alone = len(request.frames) == 1 and self.frames_out == 0 and self.detecting == 1
        method = self.model.detect_alone if alone else self.model.detect_frame
        self.frames_out += len(request.frames)
        marks["sent"] = time.monotonic()
        calls = [method.remote(frame) for frame in request.frames]
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*calls), self.timeout_s)
        except BaseException:
            for call in calls:
                call.cancel()
            raise
        finally:
            self.frames_out -= len(request.frames)
        marks["received"] = time.monotonic()
        return outcomes

    async def _body(self, request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit():
            check_body_size(int(declared), self.limits)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            check_body_size(len(body), self.limits)
        return bytes(body)

    @staticmethod
    def _method(request, allowed: str) -> None:
        if request.method != allowed:
            raise RequestError(405, f"{request.url.path} takes {allowed}, not {request.method}")

    @staticmethod
    def _json(status: int, obj) -> object:
        return responses.Response(json_body(obj), status_code=status, media_type="application/json")

    @staticmethod
    def _error(status: int, message: str, headers: dict | None = None) -> object:
        return responses.Response(
            error_body(message), status_code=status, media_type="application/json", headers=headers
        )


def _cause(error: Exception) -> str:
    """One line of an unexpected error: a remote one's own cause, not Ray's wrapped traceback."""
    if isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None:
        error = error.cause
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:300]


def _api_path(scope: dict) -> str:
    """The request's path below the application's route prefix (``/v1/detect`` under ``/defr`` too)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


def replica_env() -> dict[str, str]:
    """Environment of a model replica: OpenMP threads that sleep when idle (``OMP_WAIT_POLICY=PASSIVE``) unless
    ``OMP_WAIT_POLICY`` is set here. By default they spin after each parallel region, taking the cores the
    proxy and the ingress need to pass the answer on (a machine shared with them; measured on 2 busy
    cores: tiny-vit's call 50-85 ms passive against 115-790 ms by default, docs/benchmarks.md §8)."""
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def build_app(config: ServeConfig):
    """The bound Serve application (``serve.run`` it, or compose it with your own deployments)."""
    model = DefrModel.options(
        num_replicas=config.replicas,
        max_ongoing_requests=4 * config.max_batch,
        ray_actor_options={
            "num_cpus": config.num_cpus,
            "num_gpus": config.num_gpus,
            "runtime_env": {"env_vars": replica_env()},
        },
        graceful_shutdown_timeout_s=config.request_timeout_s,
    ).bind(config.model, config.load_options(), config.max_batch, config.batch_wait_ms / 1000, config.pin)
    return DefrIngress.options(
        graceful_shutdown_timeout_s=config.request_timeout_s,
        max_ongoing_requests=config.limits.max_in_flight + GET_ROOM,
    ).bind(model, config.limits, config.token, config.request_timeout_s, config.body_timeout_s)
