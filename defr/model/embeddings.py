"""Files of class embeddings and class names: ``defr embed-labels`` writes the first, reads the second.

- An embeddings file is safetensors with one tensor ``embeddings`` [C, T] float32 (unit rows, from a
  ``defr.model.text`` encoder) and a header: ``format`` (``EMBEDDINGS_FORMAT``, checked on read), the
  ``encoder`` name, and the ``class_names`` and their ``prompts`` as JSON. Written through
  ``atomic_path``: a failed save keeps the old file.
- A class file is plain text, one "verb object" class name per line; blank lines are skipped,
  duplicates refused.

Errors are ``ConfigError`` naming the file.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch

from defr import vocab
from defr.errors import ConfigError
from defr.files import atomic_path
from defr.jsonio import parse_json
from defr.model.text import class_embeddings, class_prompts, first_line, load_text_encoder

EMBEDDINGS_FORMAT = "defr-embeddings/1"


def save_embeddings(
    path: str | os.PathLike,
    emb: torch.Tensor,
    prompts: list[list[str]],
    class_names: list[str],
    encoder_name: str,
) -> None:
    """Write class embeddings emb: [C, T] as safetensors, with the prompts, names and encoder in the header."""
    from safetensors.torch import save_file

    if emb.ndim != 2 or not emb.shape[0] == len(prompts) == len(class_names):
        raise ConfigError(
            f"embeddings {tuple(emb.shape)} do not match {len(class_names)} class names and {len(prompts)} prompt lists"
        )
    header = {
        "format": EMBEDDINGS_FORMAT,
        "encoder": encoder_name,
        "class_names": json.dumps(list(class_names)),
        "prompts": json.dumps([list(p) for p in prompts]),
    }
    tensors = {"embeddings": emb.detach().float().contiguous().cpu()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=header)


def load_embeddings(path: str | os.PathLike) -> tuple[torch.Tensor, dict]:
    """A file from ``save_embeddings`` → (emb [C, T] float32, {"format", "encoder", "class_names", "prompts"})."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such embeddings file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            emb = f.get_tensor("embeddings") if header.get("format") == EMBEDDINGS_FORMAT else None
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise ConfigError(f"{path}: not a defr embeddings file (not safetensors: {e})") from None
    if emb is None:
        raise ConfigError(f"{path}: not a defr embeddings file (header format {header.get('format')!r})")
    try:
        names, prompts = (parse_json(header[k], f"{path}: header {k!r}") for k in ("class_names", "prompts"))
        meta = {**header, "class_names": names, "prompts": prompts}
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{path}: broken defr embeddings header ({first_line(e)})") from None
    return emb.float(), meta


def read_class_names(path: Path) -> list[str]:
    """A text file with one "verb object" class name per line (blank lines skipped)."""
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise ConfigError(f"{path}: cannot read class names ({e.strerror})") from None
    if not names:
        raise ConfigError(f"{path}: no class names")
    duplicates = sorted(n for n, k in Counter(names).items() if k > 1)
    if duplicates:
        raise ConfigError(f"{path}: duplicate class names {duplicates}")
    return names


def embed_classes(
    encoder_name: str, class_file: Path | None, templates: tuple[str, ...]
) -> tuple[torch.Tensor, list[list[str]], list[str], str]:
    """(emb [C, T], prompts, class names, encoder name) for the classes in ``class_file`` (default HICO's 600)."""
    names = read_class_names(class_file) if class_file else vocab.hico().class_names
    prompts = class_prompts(names, templates or vocab.DEFAULT_TEMPLATES)
    encoder = load_text_encoder(encoder_name)
    return class_embeddings(encoder, prompts), prompts, names, encoder.name
