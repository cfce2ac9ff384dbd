"""Starting or joining Ray: the one place ``defr`` calls ``ray.init``.

A local Ray (no address, or ``local``) is bound to loopback: Ray resolves ``127.0.0.1`` to the
machine's network address so that other nodes can join, unless clusters are off (its default on
macOS and Windows). A local Ray has no other node, so clusters are turned off while it starts and
every port of it stays on 127.0.0.1; it runs without the dashboard. An address (``auto``,
``HOST:PORT``, ``ray://...``) joins that cluster; a loopback ``HOST`` (a cluster of nodes on this
machine's 127.0.0.1) is joined on loopback too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from defr.optional import import_ray
from defr.serve.api import is_loopback

ray = import_ray()


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """``ray.init``: join the cluster at ``address``, or start a local Ray on 127.0.0.1 with ``num_cpus``
    (None: all) when ``address`` is None or ``local``."""
    from ray._private import ray_constants  # the switch Ray reads when it resolves a node's address

    local = address in (None, "local")
    previous = ray_constants.ENABLE_RAY_CLUSTER
    if local or is_loopback(address.rpartition(":")[0]):  # a cluster on this machine's loopback stays there
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        if local:
            # "local", not None: None joins whatever cluster RAY_ADDRESS or a `ray start` on this machine
            # advertises, and a server meant to own its Ray would then die with somebody else's
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
            )
        else:
            ray.init(address=address, log_to_driver=False)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """``init_ray`` for the block, then stop the local Ray (or disconnect from the cluster). A Ray already
    initialised in this process is used as it is and left running."""
    if ray.is_initialized():
        yield
        return
    init_ray(address, num_cpus)
    try:
        yield
    finally:
        ray.shutdown()
