"""Scale-out with Ray: ``defr serve`` (Ray Serve, online, batched across callers) and ``--ray`` batch jobs
(Ray Data, offline). Install with ``pip install "defr[serve]"``.

Modules: ``api`` (the HTTP API as pure functions: parsing, limits, auth, responses; no Ray),
``client`` (``DetectClient``, standard library HTTP), ``deployment`` (the Serve application),
``server`` (``run_server``: the lifecycle of ``defr serve``), ``batch`` (the Ray Data and Ray task
jobs behind ``defr detect --ray`` and ``defr video --ray``). Only ``deployment``, ``server`` and
``batch`` import Ray; importing this package does not.
"""

from __future__ import annotations


def app(config):
    """The bound Serve application of ``config`` (a ``defr.serve.deployment.ServeConfig``), to
    ``serve.run`` or to compose with your own deployments. Needs Ray (the ``serve`` extra)."""
    from defr.serve.deployment import build_app  # imports Ray: only when asked for

    return build_app(config)
