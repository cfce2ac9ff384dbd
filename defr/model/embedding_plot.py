"""A t-SNE map of class embeddings, coloured by verb (DEFR paper, Fig. 2)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import torch

from defr.errors import ConfigError
from defr.files import atomic_path


def tsne_2d(emb: torch.Tensor, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """emb: [C, T] → [C, 2] numpy t-SNE coordinates under the cosine distance."""
    from sklearn.manifold import TSNE

    if not 0 < perplexity < emb.shape[0]:
        raise ConfigError(f"perplexity must be in (0, {emb.shape[0]}) (the number of classes), not {perplexity}")
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(emb.double().numpy())


def plot_embeddings(
    points: np.ndarray, class_names: list[str], path: str | os.PathLike, title: str, top_verbs: int = 16
) -> None:
    """Scatter points: [C, 2], one per class, coloured by verb: the ``top_verbs`` commonest get colours, others grey."""
    import matplotlib
    from matplotlib.figure import Figure  # not pyplot: no global figure state, rendered by Agg

    verbs = [name.partition(" ")[0] for name in class_names]
    top = [verb for verb, _ in Counter(verbs).most_common(top_verbs)]
    tab20 = matplotlib.colormaps["tab20"].colors
    colours = tab20[:14] + tab20[16:]  # without tab20's two greys, which would read as "other verbs"
    fig = Figure(figsize=(9, 7))
    ax = fig.add_subplot()
    others = [i for i, v in enumerate(verbs) if v not in top]
    if others:
        ax.scatter(points[others, 0], points[others, 1], s=10, c="0.8", label="other verbs")
    for k, verb in enumerate(top):
        rows = [i for i, v in enumerate(verbs) if v == verb]
        ax.scatter(points[rows, 0], points[rows, 1], s=18, color=colours[k % len(colours)], label=verb)
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
