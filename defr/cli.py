"""``defr``: the command-line interface, a thin layer over the Python API.

Commands live in ``defr/commands/`` (the only modules that import click, with ``defr/export/cli.py``
for ``defr-export``) and are imported only when run, so ``defr --help`` stays fast.
"""

from __future__ import annotations

import importlib

import click

from defr.clikit import caused_by_interrupt

# name → "module:attribute" of a click command
COMMANDS = {
    "synth": "defr.commands.synth:synth_command",
    "embed-labels": "defr.commands.text:embed_labels_command",
    "plot-embeddings": "defr.commands.text:plot_embeddings_command",
    "pretrain": "defr.commands.pretrain:pretrain_command",
    "train": "defr.commands.train:train_command",
    "evaluate": "defr.commands.evaluate:evaluate_command",
    "demo": "defr.commands.demo:demo_command",
    "detect": "defr.commands.detect:detect_command",
    "eval-hicodet": "defr.commands.evaluate:eval_hicodet_command",
    "box-noise": "defr.commands.detect:box_noise_command",
    "bench": "defr.commands.bench:bench_command",
    "video": "defr.commands.video:video_command",
    "serve": "defr.commands.serve:serve_command",
    "eval-events": "defr.commands.events:eval_events_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as e:
            if not caused_by_interrupt(e):
                raise
            # Ctrl-C before a command's own handling (importing it and torch takes seconds): the line and exit
            # code every command gives (defr.clikit.one_line_errors), not click's "Aborted!" and 1
            click.echo("interrupted (SIGINT)", err=True)
            raise SystemExit(130) from None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="defr")
def main() -> None:
    """DEFR: detection-free human-object interaction recognition and detection."""
