"""Starting or joining Ray: the one place ``defr`` calls ``ray.init``.

A local Ray (no address, or ``local``) is bound to loopback: Ray resolves ``127.0.0.1`` to the
machine's network address so that other nodes can join, unless clusters are off (its default on
macOS and Windows). A local Ray has no other node, so clusters are turned off while it starts and
every port of it stays on 127.0.0.1; it runs without the dashboard. An address (``auto``,
``HOST:PORT``, ``ray://...``) joins that cluster; a loopback ``HOST`` (a cluster of nodes on this
machine's 127.0.0.1) is joined on loopback too.

Joining is bounded: Ray itself retries a cluster that does not answer for minutes, inside native code
where neither Ctrl-C nor SIGTERM gets through. So the address is resolved and its port tried with a
plain TCP connect first (``CONNECT_TIMEOUT_S``, interruptible); one that does not answer is one line
(``ServeStartError``). ``ray.init`` replaces the SIGTERM handler with one that exits 1 (its own node's
cleanup); the handler that was there before (``defr.signals``: SIGTERM as Ctrl-C, exit 143) is put back.

Ray Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]`` (hard-coded in
``ray.serve._private.replica``; no option or variable changes it). ``keep_replica_grpc_on_loopback``,
run in every replica that imports ``defr.serve.deployment``, binds it to 127.0.0.1 instead when the
replica's node address is loopback (a local Ray, or a cluster on this machine's 127.0.0.1): nothing
outside the machine could reach it through Ray anyway. On a node with a network address it is left as
Ray binds it (other nodes may call it).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from defr.errors import DefrError
from defr.optional import import_ray
from defr.serve.api import is_loopback
from defr.signals import keep_handler

ray = import_ray()


class ServeStartError(DefrError, RuntimeError):
    """The application could not be deployed (a replica failed to load the model, no resources)."""


CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """ServeStartError (one line) unless a TCP connect to the cluster at ``address`` (``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT``) succeeds within ``timeout_s``."""
    from ray._private.services import canonicalize_bootstrap_address  # how ray.init resolves it

    target = address.removeprefix("ray://")
    if address != "auto":  # Ray's resolver logs its own traceback for an empty host (`:6379`) before it raises
        host, colon, port = target.rpartition(":")
        if not colon or "://" in host or not host.strip("[]") or not port.isdigit():
            raise ServeStartError(f"Ray address {address!r}: not HOST:PORT, ray://HOST:PORT or auto")
    try:
        target = target if address.startswith("ray://") else canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError) as e:
        raise ServeStartError(f"Ray address {address!r}: {e}") from None
    host, _, port = (target or "").rpartition(":")
    if not port.isdigit():
        raise ServeStartError(f"Ray address {address!r}: no running Ray cluster found (`ray start --head` starts one)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
        raise ServeStartError(
            f"no Ray cluster answers at {address} ({why}, tried for up to {timeout_s:g} s); start one "
            "(`ray start --head`) or leave the address out for a local Ray"
        ) from None


def keep_replica_grpc_on_loopback() -> bool:
    """Make Serve's replica code bind its inter-deployment gRPC server to 127.0.0.1, not ``[::]``, on a node
    whose address is loopback → whether Ray's function was there to wrap (False: another Ray version; its
    own binding stays, as docs/serving.md says)."""
    from ray.serve._private import replica  # where Serve 2.60 looks the function up when a replica starts

    bind = getattr(replica, "add_port_to_grpc_server", None)
    if bind is None:
        return False
    if getattr(bind, "defr_loopback", False):
        return True

    def bind_on_loopback(server, address: str):
        host, _, port = address.rpartition(":")
        if host == "[::]" and is_loopback(ray.util.get_node_ip_address()):
            address = f"127.0.0.1:{port}"
        return bind(server, address)

    bind_on_loopback.defr_loopback = True
    replica.add_port_to_grpc_server = bind_on_loopback
    return True


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """``ray.init``: join the cluster at ``address``, or start a local Ray on 127.0.0.1 with ``num_cpus``
    (None: all) when ``address`` is None or ``local``."""
    from ray._private import ray_constants  # the switch Ray reads when it resolves a node's address

    local = address in (None, "local")
    previous = ray_constants.ENABLE_RAY_CLUSTER
    if local or is_loopback(address.rpartition(":")[0]):  # a cluster on this machine's loopback stays there
        ray_constants.ENABLE_RAY_CLUSTER = False
    # ray.init installs a SIGTERM handler of its own: a handler of ours (a command's) is set back after it
    try:
        with keep_handler(signal.SIGTERM), _our_sigterm_handler_while_ray_starts():
            if local:
                # "local", not None: None joins whatever cluster RAY_ADDRESS or a `ray start` on this machine
                # advertises, and a server meant to own its Ray would then die with somebody else's
                _ray_init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    log_to_driver=False,
                )
            else:
                check_reachable(address)  # with the switch set as ray.init will see it (it resolves 127.0.0.1 by it)
                _ray_init(address=address, log_to_driver=False)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while Ray started: stop what it had started
        ray.shutdown()
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


@contextmanager
def _our_sigterm_handler_while_ray_starts() -> Iterator[None]:
    """While ``ray.init`` runs, Ray may not replace a Python SIGTERM handler of ours (a command's).

    Ray installs two while it starts: the first ``sys.exit(15)``s (exit 15 without a word, and the local
    node's agents were left running), the second kills the node and exits 1. With ours kept, a SIGTERM
    interrupts ``ray.init`` as Ctrl-C does, and ``init_ray`` stops what had started."""
    from ray._private import utils as ray_utils  # where ray.init and its Node look the installer up

    install = ray_utils.set_sigterm_handler
    if callable(signal.getsignal(signal.SIGTERM)):
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = install


def _ray_init(**options) -> None:
    try:
        ray.init(**options)
    except Exception as e:  # Ray raises a bare Exception for a node that did not start in time
        # Ray's own words for a node that did not start or a join it refused; one line, not its traceback
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        where = options["address"]
        raise ServeStartError(f"Ray ({where}) did not start: {lines[0] if lines else type(e).__name__}") from None


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
