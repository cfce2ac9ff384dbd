"""The Serve deployments' own logic without a running Ray: ``DefrIngress`` with a stand-in model handle and
real Starlette requests (stalled bodies, the in-flight cap, health, errors as JSON), ``DefrModel`` with a
pinned file that changed, a failed Ray task's one line, and ``init_ray`` around a stand-in ``ray.init`` (the
SIGTERM handler, a node that did not start). ``slow`` and ``ray``: they import Ray Serve (no Ray is started)."""

from __future__ import annotations

import asyncio
import json

import pytest
from servekit import checkpoint, scene

from defr.serve.api import TIMING_STAGES, FrameOutcome, Limits, ModelPin, RequestError
from defr.serve.client import encode_image

pytestmark = [pytest.mark.slow, pytest.mark.ray]
TOKEN = "t0ken"


class _Call:
    """What ``handle.method.remote(...)`` returns: awaitable, cancellable."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __await__(self):
        async def run():
            return self.fn(*self.args)

        return run().__await__()

    def cancel(self) -> None:
        pass


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args) -> _Call:
        return _Call(self.fn, args)


class StandInModel:
    """The ``DefrModel`` handle as the ingress uses it."""

    def __init__(self, health=(200, {"status": "ok"}), frame=None, facts=None):
        self.check = _Method(lambda: health)
        self.facts = _Method(facts or (lambda: (200, {"classes": 600})))
        self.stats = _Method(lambda: {"batches": 0})
        frame = frame or (lambda f: {"boxes_h": [], "boxes_o": [], "hoi": [], "scores": []})
        self.calls: list[str] = []

        def answer(method: str):
            def run(f) -> FrameOutcome:
                self.calls.append(method)
                return FrameOutcome(frame(f), 1.0, 1.0, 1.0, 1.0)

            return run

        self.detect_frame = _Method(answer("batched"))
        self.detect_alone = _Method(answer("alone"))


def request(path: str, method: str = "GET", body: bytes | None = None, stall: bool = False, timing: bool = False):
    from starlette.requests import Request

    headers = [(b"authorization", f"bearer {TOKEN}".encode())] + [(b"x-defr-timing", b"1")] * timing
    if body is not None or stall:
        headers.append((b"content-length", str(100_000 if stall else len(body)).encode()))
    sent = []

    async def receive():
        if stall and sent:
            await asyncio.sleep(3600)  # a client that promised more and sends nothing
        sent.append(1)
        return {"type": "http.request", "body": b"{" if stall else body or b"", "more_body": stall}

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": headers, "query_string": b""}
    return Request(scope, receive)


def ingress(model: StandInModel, **limits):
    from defr.serve.deployment import DefrIngress

    return DefrIngress.func_or_class(model, Limits(**limits), TOKEN, 5.0, 0.3)


def answer(response) -> tuple[int, dict]:
    return response.status_code, json.loads(response.body)


def detect_body() -> bytes:
    images, dets = scene(0, 1)
    return json.dumps({"frames": [{"image": encode_image(images[0]), "detections": dets[0]}]}).encode()


def test_stalled_bodies_take_at_most_the_slots_get_408_and_health_answers():
    async def run():
        app = ingress(StandInModel(), max_in_flight=2)
        stalled = [asyncio.create_task(app(request("/v1/detect", "POST", stall=True))) for _ in range(2)]
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        over = answer(await app(request("/v1/detect", "POST", stall=True)))
        fast = loop.time() - start
        health = answer(await app(request("/v1/health")))
        late = [answer(r) for r in await asyncio.gather(*stalled)]
        ok = answer(await app(request("/v1/detect", "POST", detect_body())))
        return over, fast, health, late, ok

    over, fast, health, late, ok = asyncio.run(run())
    assert over == (503, {"error": "2 requests in flight, the limit max_in_flight; retry"}) and fast < 0.2
    assert health == (200, {"status": "ok"})
    assert late == [(408, {"error": "the request body did not arrive within body_timeout_s=0.3"})] * 2
    assert ok[0] == 200 and len(ok[1]["results"]) == 1  # the slots are free again


class _Hung:
    """A replica method that never answers (a replica stopped, not dead)."""

    def remote(self):
        return asyncio.sleep(3600)


def test_a_hung_replica_makes_health_503_within_its_deadline_not_the_request_timeout(monkeypatch):
    """Round-5 probe: a frozen replica (SIGSTOP) made /v1/health wait the whole --timeout-s before its 504."""
    import defr.serve.deployment as deployment

    monkeypatch.setattr(deployment, "HEALTH_TIMEOUT_S", 0.2)
    model = StandInModel()
    model.check = _Hung()

    async def run():
        start = asyncio.get_running_loop().time()
        health = await ingress(model)(request("/v1/health"))
        return health, asyncio.get_running_loop().time() - start

    health, took = asyncio.run(run())
    assert answer(health) == (503, {"error": "the model replica did not answer its health check within 0.2 s"})
    assert took < 2 and health.headers["retry-after"] == "1"  # the ingress's request timeout is 5 s


def test_a_lone_frame_skips_the_batch_wait_and_timing_is_opt_in():
    def two_frames() -> bytes:
        images, dets = scene(0, 2)
        frames = [{"image": encode_image(im), "detections": d} for im, d in zip(images, dets, strict=True)]
        return json.dumps({"frames": frames}).encode()

    async def run():
        model = StandInModel()
        app = ingress(model)
        plain = await app(request("/v1/detect", "POST", detect_body()))
        timed = await app(request("/v1/detect", "POST", detect_body(), timing=True))
        await app(request("/v1/detect", "POST", two_frames()))
        app.frames_out = 1  # another request's frame is with the model: this one may find company
        await app(request("/v1/detect", "POST", detect_body()))
        app.frames_out, app.detecting = 0, 1  # another request is still being read or parsed: it may join
        await app(request("/v1/detect", "POST", detect_body()))
        return model.calls, plain, timed

    calls, plain, timed = asyncio.run(run())
    assert calls == ["alone", "alone", "batched", "batched", "batched", "batched"]
    assert plain.status_code == timed.status_code == 200 and "server-timing" not in plain.headers
    stages = [part.split(";dur=")[0] for part in timed.headers["server-timing"].split(", ")]
    assert stages == list(TIMING_STAGES) and json.loads(timed.body) == json.loads(plain.body)


def test_model_replicas_get_passive_openmp_threads_unless_the_user_set_a_policy(monkeypatch):
    from defr.serve.deployment import ServeConfig, build_app, replica_env

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert replica_env() == {"OMP_WAIT_POLICY": "PASSIVE"}
    model = build_app(ServeConfig("m.onnx"))._bound_deployment.init_args[0]._bound_deployment  # DefrModel
    assert model.ray_actor_options["runtime_env"] == {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert replica_env() == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_model_failures_and_unexpected_errors_are_one_json_line():
    def failing(frame):
        return RequestError(500, "the model failed: BackendError: NaN logits")

    def broken():
        raise RuntimeError("boom\nsecond line")

    async def run():
        unhealthy = (503, {"error": "model replica unhealthy: NaN"})
        app = ingress(StandInModel(health=unhealthy, frame=failing, facts=broken))
        return [
            answer(await app(request(path, method, body)))
            for path, method, body in (
                ("/v1/detect", "POST", detect_body()),
                ("/v1/health", "GET", None),
                ("/v1/model", "GET", None),
            )
        ]

    assert asyncio.run(run()) == [
        (500, {"error": "the model failed: BackendError: NaN logits"}),
        (503, {"error": "model replica unhealthy: NaN"}),
        (500, {"error": "internal error: RuntimeError: second line"}),
    ]


def test_a_replica_whose_file_changed_loads_nothing_and_refuses(tmp_path):
    from defr.serve.deployment import DefrModel

    model = checkpoint(tmp_path / "tiny.safetensors")
    pin = ModelPin.of(model)
    with open(model, "ab") as f:
        f.write(b"\0")  # replaced after defr serve started
    replica = DefrModel.func_or_class(model, {}, 4, 0.001, pin)
    assert replica.detector is None
    status, body = replica.check()
    assert status == 503 and "changed since defr serve started" in body["error"]
    assert replica.facts() == (status, body)
    batch = DefrModel.func_or_class._batch.__wrapped__  # the batch body, without Serve's batcher
    outcomes = [o.result for o in asyncio.run(batch(replica, [(None, 0.0), (None, 0.0)]))]
    assert [o.status for o in outcomes] == [503, 503] and "changed since" in str(outcomes[0])


def test_a_failed_ray_task_is_its_cause_in_one_line():
    import ray

    from defr.serve.batch import VideoJobsFailed, failure_line
    from defr.video.errors import VideoError

    cause = VideoError("broken.mp4: cannot open the video (InvalidDataError: ...)")
    remote = ray.exceptions.RayTaskError("run_one_video", "Traceback (most recent call last):\n" * 75, cause)
    for error in (remote, remote.as_instanceof_cause()):
        assert failure_line(error) == "broken.mp4: cannot open the video (InvalidDataError: ...)"
    try:
        try:
            raise KeyError("frame")
        except KeyError as inner:
            raise ray.exceptions.UserCodeException("user code failed") from inner
    except ray.exceptions.UserCodeException as e:
        assert failure_line(e) == "KeyError: 'frame'"  # not ours: its type says what it is
    failed = VideoJobsFailed([{"video": "a.mp4"}], {"broken.mp4": "cannot open"})
    assert str(failed) == "1 of 2 videos failed (the others were written); first: broken.mp4: cannot open"
    named = VideoJobsFailed([], {"b.mp4": "b.mp4: not a readable video"})  # round-5 probe: was "b.mp4: b.mp4: ..."
    assert str(named) == "1 of 1 videos failed (the others were written); first: b.mp4: not a readable video"


def test_init_ray_puts_our_sigterm_handler_back_and_a_failed_start_is_one_line(monkeypatch):
    import signal

    import defr.serve.connect as connect

    def ray_like_init(**options):  # ray.init replaces the SIGTERM handler with one that exits 1
        signal.signal(signal.SIGTERM, lambda *_: None)

    def ours(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        monkeypatch.setattr(connect.ray, "init", ray_like_init)
        connect.init_ray(num_cpus=1)
        assert signal.getsignal(signal.SIGTERM) is ours

        def timed_out(**options):
            raise Exception("The current node timed out during startup. This could happen because ...\nmore")

        monkeypatch.setattr(connect.ray, "init", timed_out)
        with pytest.raises(connect.ServeStartError, match=r"^Ray \(local\) did not start: The current node timed out"):
            connect.init_ray(num_cpus=1)
    finally:
        signal.signal(signal.SIGTERM, previous)
