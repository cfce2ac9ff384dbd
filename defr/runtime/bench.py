"""``defr bench``: latency of the pair backends (PyTorch eager, ONNX Runtime, TensorRT).

One measurement is one backend call as ``HOIDetector`` makes it: a batch of B preprocessed
images with ``pairs`` pairs per image (P = B · pairs), outputs copied to the CPU. With no pairs,
exported graphs get the detector's one dummy pair. Median and 90th-percentile wall time over
``repeats`` calls after ``warmup`` calls; images/s = B / median. Random images and boxes: speed
does not depend on the values.

``--model`` is a checkpoint (timed in PyTorch and, exported to a temporary folder, in ONNX
Runtime), an exported ``.onnx`` (ONNX Runtime) or ``.engine`` (TensorRT), or a backbone name
such as ``tiny-vit`` or ``ViT-B-32`` with ``--image-size`` (random weights, both backends).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import click
import numpy as np
import torch

from defr.errors import ConfigError
from defr.files import write_json
from defr.runtime.detector import BackendError, PairBackend, TorchBackend, load_model

BACKENDS = ("torch", "onnxruntime")


@dataclass
class BenchConfig:
    model: str
    image_size: int | None = None  # needed for a backbone name; otherwise the model's
    batches: tuple[int, ...] = (1, 8)
    pairs: tuple[int, ...] = (0, 16, 64, 225)  # per image
    backends: tuple[str, ...] = BACKENDS  # for checkpoints and backbone names
    warmup: int = 3
    repeats: int = 10
    device: str = "cpu"
    threads: int | None = None  # CPU threads of both PyTorch and ONNX Runtime (None: their defaults)

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if not self.pairs or min(self.pairs) < 0:
            raise ConfigError(f"pair counts must be >= 0, got {list(self.pairs)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, not {self.threads}")
        if self.warmup < 0 or self.repeats < 1:
            raise ConfigError(f"need warmup >= 0 and repeats >= 1, got {self.warmup} and {self.repeats}")
        unknown = set(self.backends) - set(BACKENDS)
        if unknown or not self.backends:
            raise ConfigError(f"backends must be among {BACKENDS}, got {list(self.backends)}")


@dataclass
class BenchRow:
    backend: str
    precision: str
    batch: int
    pairs: int  # per image
    median_ms: float
    p90_ms: float
    images_per_s: float


def bench_inputs(image_size: int, batch: int, pairs: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """images [B, 3, S, S]; boxes_h, boxes_o [B·pairs, 4] valid S×S pixels; pair_index [B·pairs], sorted."""
    gen = torch.Generator().manual_seed(seed)
    p = batch * pairs
    images = torch.randn(batch, 3, image_size, image_size, generator=gen)
    corner = torch.rand(2, p, 2, generator=gen) * image_size * 0.7
    boxes = torch.cat([corner, corner + torch.rand(2, p, 2, generator=gen) * image_size * 0.3 + 1], dim=2)
    return images, boxes[0], boxes[1], torch.arange(batch).repeat_interleave(pairs)


def time_backend(
    backend: PairBackend, image_size: int, batch: int, pairs: int, warmup: int, repeats: int
) -> list[float]:
    """Seconds per call, ``repeats`` of them, after ``warmup`` calls."""
    images, boxes_h, boxes_o, pair_index = bench_inputs(image_size, batch, pairs)
    if pair_index.numel() == 0 and not getattr(backend, "accepts_no_pairs", False):
        whole = torch.tensor([[0.0, 0.0, image_size, image_size]])  # the detector's dummy pair
        boxes_h, boxes_o, pair_index = whole, whole, torch.zeros(1, dtype=torch.long)
    times = []
    for k in range(warmup + repeats):
        start = time.perf_counter()
        outputs = backend(images, boxes_h, boxes_o, pair_index)
        [o.cpu() for o in outputs]  # waits for asynchronous devices
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return times


def row(name: str, precision: str, batch: int, pairs: int, times: list[float]) -> BenchRow:
    median = statistics.median(times)
    return BenchRow(
        backend=name,
        precision=precision,
        batch=batch,
        pairs=pairs,
        median_ms=1000 * median,
        p90_ms=1000 * float(np.percentile(times, 90)),
        images_per_s=batch / median,
    )


def machine_info(device: str) -> dict:
    """CPU model, cores, threads, package versions (and the GPU on CUDA)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), cpu
        )
    versions = {}
    for name in ("defr", "torch", "onnxruntime", "tensorrt"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def build_backends(cfg: BenchConfig, workdir: Path) -> tuple[list[tuple[str, object]], int]:
    """([(name, backend)], image size) for ``cfg.model``; checkpoints and names are exported into ``workdir``."""
    from defr.runtime.backends import OnnxBackend, TensorRTBackend

    providers = ["CPUExecutionProvider"] if torch.device(cfg.device).type == "cpu" else None
    suffix = Path(cfg.model).suffix.lower()
    if suffix == ".onnx":
        backend = OnnxBackend(cfg.model, providers, cfg.threads)
        return [("onnxruntime", backend)], backend.meta.image_size
    if suffix == ".engine":
        backend = TensorRTBackend(cfg.model)  # engines run on CUDA whatever --device says
        return [("tensorrt", backend)], backend.meta.image_size
    checkpoint = Path(cfg.model) if Path(cfg.model).is_file() else random_checkpoint(cfg, workdir)
    model = load_model(checkpoint)
    if cfg.image_size is not None and cfg.image_size != model.cfg.image_size:
        from defr.export.cli import at_image_size

        model = at_image_size(model, cfg.image_size)
    backends = []
    if "torch" in cfg.backends:
        backends.append(("torch", TorchBackend(model, device=cfg.device)))
    if "onnxruntime" in cfg.backends:
        from defr.export import ExportConfig, export_model

        export_model(checkpoint, workdir / "onnx", ExportConfig(image_size=cfg.image_size, verify=False), log=_quiet)
        backends.append(("onnxruntime", OnnxBackend(workdir / "onnx" / "model.onnx", providers, cfg.threads)))
    return backends, model.cfg.image_size


def random_checkpoint(cfg: BenchConfig, workdir: Path) -> Path:
    """A checkpoint of backbone ``cfg.model`` with random weights, 600 HICO classes."""
    from defr import vocab
    from defr.model import DEFR, DEFRConfig, backbone_spec, save_checkpoint

    if cfg.image_size is None:
        raise ConfigError(f"{cfg.model}: not a file; to benchmark a backbone with random weights give --image-size")
    torch.manual_seed(0)
    model = DEFR(DEFRConfig(backbone_spec(cfg.model, cfg.image_size), vocab.hico().class_names))
    path = workdir / "random.safetensors"
    save_checkpoint(model, path)
    return path


def _quiet(message: str) -> None:
    """Export progress is not part of the benchmark output."""


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict:
    """Every (backend, batch, pairs) of ``cfg``: {"config", "machine", "rows"}."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or default_threads)
    try:
        with tempfile.TemporaryDirectory(prefix="defr-bench-") as tmp:
            backends, image_size = build_backends(cfg, Path(tmp))
            rows = []
            for name, backend in backends:
                for batch in cfg.batches:
                    for pairs in cfg.pairs:
                        times = time_backend(backend, image_size, batch, pairs, cfg.warmup, cfg.repeats)
                        rows.append(row(name, getattr(backend, "precision", "fp32"), batch, pairs, times))
                        if progress:
                            click.echo(format_table([rows[-1]], header=False), err=True)
        machine = machine_info(cfg.device)
    finally:
        torch.set_num_threads(default_threads)
    config = {**asdict(cfg), "image_size": image_size}
    return {"config": config, "machine": machine, "rows": [asdict(r) for r in rows]}


def format_table(rows: list[BenchRow], header: bool = True) -> str:
    lines = [
        f"{'backend':<12} {'precision':<9} {'batch':>5} {'pairs':>5} {'median ms':>10} {'p90 ms':>10} {'images/s':>9}"
    ]
    lines += [
        f"{r.backend:<12} {r.precision:<9} {r.batch:>5} {r.pairs:>5} {r.median_ms:>10.2f} {r.p90_ms:>10.2f} "
        f"{r.images_per_s:>9.2f}"
        for r in rows
    ]
    return "\n".join(lines if header else lines[1:])


def _int_list(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@click.command("bench")
@click.option("--model", required=True, help="Checkpoint, model.onnx, model.<precision>.engine, or a backbone name.")
@click.option("--image-size", type=int, help="Input size for a backbone name (or to resize a checkpoint).")
@click.option("--pairs", default="0,16,64,225", show_default=True, callback=_int_list, help="Pairs per image.")
@click.option("--batch", "batches", default="1,8", show_default=True, callback=_int_list, help="Images per call.")
@click.option("--backends", default=",".join(BACKENDS), show_default=True, help="For checkpoints and backbone names.")
@click.option("--warmup", default=BenchConfig.warmup, show_default=True, type=int)
@click.option("--repeats", default=BenchConfig.repeats, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, help="CPU threads of PyTorch and ONNX Runtime (default: theirs).")
@click.option("--json", "json_out", default="bench.json", show_default=True, type=click.Path(dir_okay=False))
def bench_command(model, image_size, pairs, batches, backends, warmup, repeats, device, threads, json_out) -> None:
    """Time the pair backends over batch sizes and pairs per image; print a table, write JSON."""
    try:
        cfg = BenchConfig(
            model=model,
            image_size=image_size,
            batches=batches,
            pairs=pairs,
            backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
            warmup=warmup,
            repeats=repeats,
            device=device,
            threads=threads,
        )
        result = run_bench(cfg)
    except (ValueError, BackendError) as e:  # input errors (checkpoint, sidecar, backbone) and missing runtimes
        raise click.ClickException(str(e)) from None
    write_json(result, json_out)
    click.echo(format_table([BenchRow(**r) for r in result["rows"]]))
    m = result["machine"]
    click.echo(
        f"{m['cpu']}, {m['cores']} cores, torch {m['versions']['torch']}, onnxruntime {m['versions']['onnxruntime']}"
    )
    click.echo(f"wrote {json_out}")
