"""``defr serve``: the HOI runtime as an HTTP service on Ray Serve (``defr.serve.server.run_server``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import click
from click.core import ParameterSource

from defr.commands import one_line_errors
from defr.commands.options import MODEL_OPTIONS, model_request
from defr.serve.api import Limits, check_exposure

# The longest --timeout-s / --body-timeout-s: a day. Waits beyond what the platform's clock can count
# (1e308 s) failed with OverflowError at shutdown, and no request needs to wait longer.
MAX_TIMEOUT_S = 86400.0


def _finite(ctx, param, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, not {value}")
    return value


@click.command("serve")
@MODEL_OPTIONS
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(min=1), help="Model replicas.")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(min=1), help="Frames per model call.")
@click.option(
    "--batch-wait-ms",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    callback=_finite,
    help="A batch waits this long for more frames.",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), help="Keep at most N triplets per frame.")
@click.option(
    "--num-cpus-per-replica",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    callback=_finite,
    help="Ray CPUs per replica (its torch threads).",
)
@click.option(
    "--num-gpus-per-replica",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    callback=_finite,
    help="Ray GPUs per replica (with --device cuda).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (non-loopback needs --token).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    envvar="DEFR_SERVE_TOKEN",
    help="Require 'Authorization: Bearer TOKEN'. Set $DEFR_SERVE_TOKEN instead: an option is visible in ps.",
)
@click.option("--no-auth", is_flag=True, help="Allow a non-loopback --host without a token.")
@click.option("--address", help="A running Ray cluster to join (auto, HOST:PORT); default: start a local Ray.")
@click.option(
    "--max-body-mb",
    default=32.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    callback=_finite,
    help="Largest request body (413 above).",
)
@click.option("--max-frames", default=64, show_default=True, type=click.IntRange(min=1), help="Per request.")
@click.option("--max-boxes", default=300, show_default=True, type=click.IntRange(min=1), help="Per frame.")
@click.option(
    "--max-pixels", default=Limits.max_pixels, show_default=True, type=click.IntRange(min=1), help="Per frame."
)
@click.option(
    "--max-request-pixels",
    default=Limits.max_request_pixels,
    show_default=True,
    type=click.IntRange(min=1),
    help="Decoded pixels of all frames of a request.",
)
@click.option(
    "--max-in-flight",
    default=Limits.max_in_flight,
    show_default=True,
    type=click.IntRange(min=1),
    help="Detect requests at once (503 above).",
)
@click.option(
    "--timeout-s",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True, max=MAX_TIMEOUT_S),
    callback=_finite,
    help="Longest a request waits (then 504).",
)
@click.option(
    "--body-timeout-s",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True, max=MAX_TIMEOUT_S),
    callback=_finite,
    help="Longest a request body may take to arrive (then 408).",
)
def serve_command(
    checkpoint: Path | None,
    model_file: Path | None,
    replicas: int,
    max_batch: int,
    batch_wait_ms: float,
    device: str,
    runtime: str | None,
    precision: str,
    mask_mode: str | None,
    top_k: int | None,
    num_cpus_per_replica: float,
    num_gpus_per_replica: float,
    host: str,
    port: int,
    token: str | None,
    no_auth: bool,
    address: str | None,
    max_body_mb: float,
    max_frames: int,
    max_boxes: int,
    max_pixels: int,
    max_request_pixels: int,
    max_in_flight: int,
    timeout_s: float,
    body_timeout_s: float,
) -> None:
    """Serve HOI detection over HTTP (POST /v1/detect), batching frames across callers; docs/serving.md.

    Runs until SIGTERM or Ctrl-C, then drains in-flight requests and stops what it started.
    """
    with one_line_errors():  # the model's choices: checked before anything else, Ray included
        model, options = model_request(checkpoint, model_file, runtime, precision, mask_mode, device=device)
    if address is None and not model.is_file():
        raise click.UsageError(f"{model}: {'not a regular file' if model.exists() else 'no such model file'}")
    if token is None and "DEFR_SERVE_TOKEN" in os.environ:  # click reads an empty variable as unset: no auth
        raise click.UsageError("$DEFR_SERVE_TOKEN is set but empty: give it the token, or unset it for none")
    if batch_wait_ms >= timeout_s * 1000:  # a batch of several frames would wait past every request's timeout
        raise click.BadParameter(
            f"{batch_wait_ms:g} ms is not shorter than --timeout-s {timeout_s:g} s", param_hint="'--batch-wait-ms'"
        )
    if max_body_mb * 2**20 < 1:
        raise click.BadParameter(f"{max_body_mb:g} MB is less than one byte", param_hint="'--max-body-mb'")
    if token is not None and click.get_current_context().get_parameter_source("token") == ParameterSource.COMMANDLINE:
        click.echo("warning: --token is visible to every user of this machine (ps); set $DEFR_SERVE_TOKEN", err=True)
    with one_line_errors():
        check_exposure(host, token, no_auth)
        from defr.serve.deployment import ServeConfig  # imports Ray: after the checks that need none
        from defr.serve.server import run_server

        config = ServeConfig(
            model=str(model),
            replicas=replicas,
            max_batch=max_batch,
            batch_wait_ms=batch_wait_ms,
            options=options,
            top_k=top_k,
            num_cpus=num_cpus_per_replica,
            num_gpus=num_gpus_per_replica,
            token=token,
            request_timeout_s=timeout_s,
            body_timeout_s=body_timeout_s,
            limits=Limits(
                max_body_bytes=int(max_body_mb * 2**20),
                max_frames=max_frames,
                max_boxes=max_boxes,
                max_pixels=max_pixels,
                max_request_pixels=max_request_pixels,
                max_in_flight=max_in_flight,
            ),
        )
        run_server(config, host=host, port=port, address=address, log=click.echo)
