"""``run_server``: the lifecycle of ``defr serve`` — start (or join) Ray, run the application, wait, drain, stop.

Without an address it starts a local Ray (bound to 127.0.0.1, no dashboard) and on SIGTERM / SIGINT
deletes the application (replicas finish their in-flight requests, up to ``request_timeout_s``), shuts
Serve down and stops that Ray: nothing is left running and the port is free. With an address it
joins the user's cluster and removes only its own application, leaving the cluster and Serve up.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from defr.errors import DefrError
from defr.optional import import_ray, import_ray_serve
from defr.serve.connect import init_ray
from defr.serve.deployment import APP_NAME, ServeConfig, build_app


class ServeStartError(DefrError, RuntimeError):
    """The application could not be deployed (a replica failed to load the model, no resources)."""


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if "Error:" in line]
    return (causes[-1] if causes else lines[0] if lines else type(error).__name__)[:500]


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
    """
    ray, serve = import_ray(), import_ray_serve()
    stop = stop or threading.Event()
    init_ray(address, num_cpus)
    # after ray.init, which installs handlers of its own; only the main thread may set them
    main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGTERM, signal.SIGINT) if main_thread else ()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in signals}
    try:
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as e:  # Serve's word for "the replicas did not start" (their error inside)
            raise ServeStartError(f"the defr application did not start on Ray Serve: {_first_line(e)}") from None
        log(f"defr serve: {config.model} on http://{host}:{port}/v1/detect ({config.replicas} replica(s))")
        stop.wait()
        log("defr serve: draining in-flight requests")
        ingress = serve.get_deployment_handle("DefrIngress", APP_NAME)
        left = ingress.drain.remote(config.request_timeout_s).result(timeout_s=config.request_timeout_s + 10)
        if left:
            log(f"defr serve: {left} request(s) still in flight after {config.request_timeout_s} s; stopping anyway")
    finally:
        try:
            serve.delete(APP_NAME)  # waits for the replicas' in-flight requests (graceful shutdown)
            if address in (None, "local"):
                serve.shutdown()
        finally:
            ray.shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
    log("defr serve: stopped" + ("" if address in (None, "local") else f" (the cluster at {address} keeps running)"))
