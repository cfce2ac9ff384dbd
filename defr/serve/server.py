"""``run_server``: the lifecycle of ``defr serve`` — start (or join) Ray, run the application, wait, drain, stop.

Before Ray starts (``check_before_ray``) it checks what can be checked here: a local run's port is free,
its device exists and its model file loads (one line each, in seconds, not Serve's "Failed to update the
deployments" a minute later), and it pins the model file's SHA-256 for the replicas. While it runs it
says on the console when a replica's health changes (a model that fails, a file that broke the pin).

Without an address it starts a local Ray (bound to 127.0.0.1, no dashboard) and on SIGTERM / SIGINT
deletes the application (replicas finish their in-flight requests, up to ``request_timeout_s``), shuts
Serve down and stops that Ray: nothing is left running and the port is free. With an address it
joins the user's cluster and removes only its own application, leaving the cluster and Serve up.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

from defr.errors import DefrError
from defr.optional import import_ray, import_ray_serve
from defr.runtime import HOIDetector
from defr.serve.api import ModelPin, check_device, check_port_free
from defr.serve.connect import ServeStartError, init_ray
from defr.serve.deployment import APP_NAME, ServeConfig, build_app
from defr.signals import on_signals

HEALTH_EVERY_S = 5.0  # how often the console hears about a replica's health (only changes are printed)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if "Error:" in line]
    return (causes[-1] if causes else lines[0] if lines else type(error).__name__)[:500]


def check_before_ray(config: ServeConfig, host: str, port: int, address: str | None) -> ServeConfig:
    """What can be checked before Ray starts → ``config`` with its model file pinned (``ModelPin``).

    A local run (no ``address``) checks the port, the device and that the model loads here as a
    replica will load it (then frees it). Joining a cluster, the device and the file are the nodes'
    business; the file is pinned when it is readable here (the same path on every node).
    """
    if address in (None, "local"):
        check_port_free(host, port)
        check_device(config.options.device)
        try:
            HOIDetector.open(config.model, **config.load_options())  # loaded and dropped: the check is that it loads
        except DefrError:
            raise
        except Exception as e:  # torch's and the runtimes' own errors: one line, before Ray
            raise ServeStartError(f"{config.model}: cannot load the model ({_first_line(e)})") from None
    pin = ModelPin.of(config.model) if Path(config.model).is_file() else None
    return dataclasses.replace(config, pin=pin)


def _say_health(model, log: Callable[[str], None], said: str | None) -> str | None:
    """Ask one replica of ``model`` (a handle) how it is; log it when that changed since ``said`` → what was said."""
    try:
        status, answer = model.check.remote().result(timeout_s=HEALTH_EVERY_S)
    except Exception:  # a replica restarting or busy: nothing new to say
        return said
    now = "ok" if status == 200 else answer["error"]
    if now != said and (said is not None or now != "ok"):
        log(f"defr serve: {now}" if now != "ok" else "defr serve: the model replica answers again")
    return now


def run_server(
    config: ServeConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    num_cpus: int | None = None,
    log: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Serve ``config`` on ``http://host:port`` until SIGTERM / SIGINT (in the main thread) or ``stop`` is set.

    address: a running Ray cluster (``ray start --head``, KubeRay; ``auto``) to join; None starts a
    local Ray with ``num_cpus`` (default: all). Check the bind with ``defr.serve.api.check_exposure`` first.
    Raises ConfigError / a DefrError of the model's loader before Ray starts (``check_before_ray``).
    """
    ray, serve = import_ray(), import_ray_serve()
    stop = stop or threading.Event()
    config = check_before_ray(config, host, port, address)
    if config.pin is None:
        log(f"defr serve: {config.model} is not readable here: replicas will not check it against a pinned SHA-256")
    init_ray(address, num_cpus)
    # after ray.init, which installs handlers of its own; restored after ray.shutdown
    with on_signals(lambda _signum: stop.set()):
        try:
            serve.start(http_options={"host": host, "port": port})
            try:
                serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
            except RuntimeError as e:  # Serve's word for "the replicas did not start" (their error inside)
                raise ServeStartError(f"the defr application did not start on Ray Serve: {_first_line(e)}") from None
            pinned = f", SHA-256 {config.pin.sha256[:12]}..." if config.pin else ""
            log(f"defr serve: {config.model}{pinned} on http://{host}:{port}/v1/detect ({config.replicas} replica(s))")
            model = serve.get_deployment_handle("DefrModel", APP_NAME)
            said = _say_health(model, log, None)
            while not stop.wait(HEALTH_EVERY_S):
                said = _say_health(model, log, said)
            log("defr serve: draining in-flight requests")
            ingress = serve.get_deployment_handle("DefrIngress", APP_NAME)
            left = ingress.drain.remote(config.request_timeout_s).result(timeout_s=config.request_timeout_s + 10)
            if left:
                log(
                    f"defr serve: {left} request(s) still in flight after {config.request_timeout_s} s; stopping anyway"
                )
        finally:
            try:
                serve.delete(APP_NAME)  # waits for the replicas' in-flight requests (graceful shutdown)
                if address in (None, "local"):
                    serve.shutdown()
            finally:
                ray.shutdown()
    log("defr serve: stopped" + ("" if address in (None, "local") else f" (the cluster at {address} keeps running)"))
