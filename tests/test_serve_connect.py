"""What ``defr serve`` and ``--ray`` check before Ray starts, and joining a cluster that does not answer: one
line in seconds (``slow`` and ``ray``: they import Ray, and a regression would start it)."""

from __future__ import annotations

import socket
import time

import pytest
from click.testing import CliRunner
from servekit import checkpoint, free_port

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def no_ray_start(monkeypatch):
    """Fail the test if the command gets as far as starting (or joining) Ray."""
    pytest.importorskip("ray")
    import defr.serve.server

    def started(*args, **kwargs):
        raise AssertionError("Ray was started before the checks")

    monkeypatch.setattr(defr.serve.server, "init_ray", started)


def serve(*args: str) -> tuple[int, str, float]:
    from defr.cli import main

    start = time.perf_counter()
    r = CliRunner().invoke(main, ["serve", *args], catch_exceptions=False)
    return r.exit_code, r.output, time.perf_counter() - start


def test_serve_checks_port_model_and_device_before_ray(no_ray_start, tmp_path):
    model = checkpoint(tmp_path / "tiny.safetensors")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, output, _ = serve("--checkpoint", model, "--port", port)
    assert code == 1 and output == (
        f"Error: --port {port}: 127.0.0.1:{port} is in use (another defr serve?); pick another --port or --host\n"
    )
    text = tmp_path / "notes.safetensors"
    text.write_text("not a model\n")
    code, output, _ = serve("--checkpoint", str(text), "--port", str(free_port()))
    assert code == 1 and output.count("\n") == 1 and "notes.safetensors: not a DEFR checkpoint" in output
    code, output, _ = serve("--checkpoint", model, "--device", "banana", "--port", str(free_port()))
    assert code == 1 and output == "Error: --device 'banana' is not a torch device (cpu, cuda, cuda:1, ...)\n"


def test_serve_warns_that_a_token_option_shows_in_ps(no_ray_start, tmp_path, monkeypatch):
    text = tmp_path / "notes.safetensors"
    text.write_text("not a model\n")
    code, output, _ = serve("--checkpoint", str(text), "--token", "s3cret", "--port", str(free_port()))
    assert code == 1 and output.startswith("warning: --token is visible to every user of this machine (ps)")
    monkeypatch.setenv("DEFR_SERVE_TOKEN", "s3cret")
    code, output, _ = serve("--checkpoint", str(text), "--port", str(free_port()))
    assert code == 1 and "warning" not in output


def test_a_cluster_that_does_not_answer_is_one_line_in_seconds(tmp_path):
    pytest.importorskip("ray")
    from servekit import image_set

    from defr.cli import main

    model = checkpoint(tmp_path / "tiny.safetensors")
    code, output, took = serve("--checkpoint", model, "--address", "127.0.0.1:1")
    assert code == 1 and output.count("\n") == 1 and took < 30, output
    assert "Error: no Ray cluster answers at 127.0.0.1:1 (Connection refused" in output
    images, dets = image_set(tmp_path, 1)
    args = ["detect", "--checkpoint", model, "--images", str(images), "--detections", str(dets)]
    args += ["--out", str(tmp_path / "r.json")]
    start = time.perf_counter()
    r = CliRunner().invoke(main, [*args, "--ray", "127.0.0.1:1"], catch_exceptions=False)
    assert r.exit_code == 1 and "Error: no Ray cluster answers at 127.0.0.1:1" in r.output, r.output
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("address", [":6379", "", "127.0.0.1", "http://127.0.0.1:1", "ray://:10001", "[]:1"])
def test_a_malformed_cluster_address_is_one_line_without_ray_s_logged_traceback(address, capfd):
    pytest.importorskip("ray")
    from defr.serve.connect import ServeStartError, check_reachable

    with pytest.raises(ServeStartError, match=r"not HOST:PORT, ray://HOST:PORT or auto$"):
        check_reachable(address)
    assert "Traceback" not in capfd.readouterr().err


def test_sigterm_while_ray_starts_is_an_interrupt_and_stops_what_ray_started(monkeypatch):
    """Ray's own SIGTERM handlers, installed inside ray.init, made a SIGTERM there exit 15 without a word and
    leave the local node's agents running (round 5 probe r10); ours stays, and Ray is shut down."""
    pytest.importorskip("ray")
    import signal
    import sys

    from defr.serve import connect
    from defr.signals import Interrupted, sigterm_as_interrupt

    def ray_init(**options):  # what ray.init does at its start, then the signal arrives while the node starts
        connect.ray._private.utils.set_sigterm_handler(lambda signum, _frame: sys.exit(signum))
        signal.raise_signal(signal.SIGTERM)

    shutdowns = []
    monkeypatch.setattr(connect.ray, "init", ray_init)
    monkeypatch.setattr(connect.ray, "shutdown", lambda: shutdowns.append(1))
    with pytest.raises(Interrupted) as stopped, sigterm_as_interrupt():
        connect.init_ray(None, 1)
    assert stopped.value.signum == signal.SIGTERM and shutdowns == [1]
    assert connect.ray._private.utils.set_sigterm_handler.__module__ == "ray._private.utils"
