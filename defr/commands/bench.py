"""``defr bench``: time the pair backends; print a table, write JSON (the library is ``defr.bench``)."""

from __future__ import annotations

import click

from defr.bench import BACKENDS, DEFAULT_BACKENDS, MAX_THREADS, BenchConfig, BenchRow, format_table, run_bench
from defr.commands import int_list, one_line_errors
from defr.commands.options import ATTENTION_OPTION, DEVICE_OPTION, MODEL_CHOICE_OPTIONS
from defr.files import OutputSet, write_json


@click.command("bench")
@click.option("--model", required=True, help="Checkpoint, model.onnx, model.<precision>.engine, or a backbone name.")
@click.option("--image-size", type=int, help="Input size for a backbone name (or to resize a checkpoint).")
@click.option("--pairs", default="0,16,64,225", show_default=True, callback=int_list, help="Pairs per image.")
@click.option("--batch", "batches", default="1,8", show_default=True, callback=int_list, help="Images per call.")
@click.option(
    "--backends",
    default=",".join(DEFAULT_BACKENDS),
    show_default=True,
    help=f"For checkpoints and backbone names, among {', '.join(BACKENDS)} (the -int8 ones run model.int8.onnx, "
    "the -nncf ones NNCF's model.int8.nncf.onnx; openvino-bf16 runs model.onnx with OpenVINO's bf16 hint).",
)
@click.option("--warmup", default=BenchConfig.warmup, show_default=True, type=int)
@click.option("--repeats", default=BenchConfig.repeats, show_default=True, type=int)
@DEVICE_OPTION
@click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    help="CPU threads of PyTorch, ONNX Runtime and OpenVINO (default: theirs).",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Results JSON [default: bench.json].")
@click.option("--overwrite", is_flag=True, help="Replace a bench.json (the default name) that defr did not write.")
@MODEL_CHOICE_OPTIONS
@ATTENTION_OPTION
def bench_command(
    model,
    image_size,
    pairs,
    batches,
    backends,
    warmup,
    repeats,
    device,
    threads,
    json_out,
    overwrite,
    mask_mode,
    attention,
    runtime,
    precision,
) -> None:
    """Time the pair backends over batch sizes and pairs per image; print a table, write JSON."""
    defaults = [] if json_out else ["--json"]
    json_out = json_out or "bench.json"
    outputs = {"--json": json_out}
    with one_line_errors(), OutputSet(outputs, inputs=[model], defaults=defaults, overwrite=overwrite) as staged:
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
            mask_mode=mask_mode,
            attention=attention,
            runtime=runtime,
            precision=precision,
        )
        result = run_bench(cfg, progress=lambda line: click.echo(line, err=True))
        write_json(result, staged["--json"])
    click.echo(format_table([BenchRow(**r) for r in result["rows"]]))
    m = result["machine"]
    click.echo(
        f"{m['cpu']}, {m['cores']} cores, torch {m['versions']['torch']}, onnxruntime {m['versions']['onnxruntime']}, "
        f"openvino {m['versions']['openvino']}"
    )
    click.echo(f"wrote {json_out}")
