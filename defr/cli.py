"""``defr``: the command-line interface, a thin layer over the Python API.

Each command lives beside the code it drives and is imported only when run, so ``defr --help``
stays fast.
"""

from __future__ import annotations

import importlib

import click

# name → "module:attribute" of a click command
COMMANDS = {
    "synth": "defr.commands.synth:synth_command",
    "embed-labels": "defr.model.text:embed_labels_command",
    "plot-embeddings": "defr.model.text:plot_embeddings_command",
    "train": "defr.train:train_command",
    "evaluate": "defr.eval.classification:evaluate_command",
    "demo": "defr.demo:demo_command",
    "detect": "defr.runtime.cli:detect_command",
    "eval-hicodet": "defr.eval.hicodet:eval_hicodet_command",
    "box-noise": "defr.runtime.box_noise:box_noise_command",
    "bench": "defr.runtime.bench:bench_command",
    "video": "defr.commands.video:video_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="defr")
def main() -> None:
    """DEFR: detection-free human-object interaction recognition and detection."""
