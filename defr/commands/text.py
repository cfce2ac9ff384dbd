"""``defr embed-labels`` (class sentences → embeddings file) and ``defr plot-embeddings`` (t-SNE map)."""

from __future__ import annotations

from pathlib import Path

import click

from defr.commands import one_line_errors
from defr.files import OutputSet
from defr.model.embedding_plot import plot_embeddings, tsne_2d
from defr.model.embeddings import embed_classes, load_embeddings, save_embeddings
from defr.model.text import NAME_FORMS


@click.command("embed-labels")
@click.option("--encoder", "encoder_name", required=True, help=f"Text encoder: {NAME_FORMS}.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .safetensors.")
@click.option(
    "--classes",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File with one 'verb object' class per line (default: the 600 HICO classes).",
)
@click.option("--template", "templates", multiple=True, help="Prompt template, '{}' = the phrase (repeatable).")
def embed_labels_command(encoder_name: str, out: Path, classes: Path | None, templates: tuple[str, ...]) -> None:
    """Embed HOI class sentences with a text encoder and save them."""
    with one_line_errors(), OutputSet({"--out": out}, inputs=[classes]) as staged:
        emb, prompts, names, name = embed_classes(encoder_name, classes, templates)
        save_embeddings(staged["--out"], emb, prompts, names, name)
    click.echo(f"{out}: {emb.shape[0]} classes × {emb.shape[1]} dims from {name}, {len(prompts[0])} template(s)")


@click.command("plot-embeddings")
@click.option("--embeddings", type=click.Path(dir_okay=False, path_type=Path), help="File from embed-labels.")
@click.option("--encoder", "encoder_name", help="Embed the 600 HICO classes with this encoder instead.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .png.")
@click.option("--perplexity", default=30.0, show_default=True, help="t-SNE perplexity (below the number of classes).")
@click.option("--seed", default=0, show_default=True, help="t-SNE random seed.")
def plot_embeddings_command(
    embeddings: Path | None, encoder_name: str | None, out: Path, perplexity: float, seed: int
) -> None:
    """t-SNE map of class embeddings, coloured by verb (DEFR paper, Fig. 2)."""
    if (embeddings is None) == (encoder_name is None):
        raise click.ClickException("give exactly one of --embeddings and --encoder")
    with one_line_errors(), OutputSet({"--out": out}, inputs=[embeddings]) as staged:
        if embeddings is not None:
            emb, meta = load_embeddings(embeddings)
            names, name = meta["class_names"], meta["encoder"]
        else:
            emb, _, names, name = embed_classes(encoder_name, None, ())
        plot_embeddings(
            tsne_2d(emb, perplexity, seed), names, staged["--out"], title=f"{len(names)} HOI classes, {name}"
        )
    click.echo(f"{out}: t-SNE of {len(names)} classes embedded by {name}")
