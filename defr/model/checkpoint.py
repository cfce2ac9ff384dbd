"""Checkpoints: our safetensors file (``save_checkpoint`` / ``load_checkpoint``) and ``load_model``,
the one front door that also takes the released DEFR ``.pth``.

Our format: one safetensors file; its header holds ``format`` (``defr-checkpoint/1``), ``config``
(the ``DEFRConfig`` as JSON) and optional ``metadata`` (JSON: epoch, training config, …). Loading
refuses, with one line naming the file, a header that is not ours, a config that is not valid JSON
(read by ``defr.jsonio``: huge integers, NaN and deep nesting are refused by name) or lacks a field,
a config value out of its sane bounds (``ViTConfig`` / ``BackboneSpec`` name the field), tensors
whose names or shapes disagree with the config, and non-finite weights. The config is checked
against the tensors' shapes, read from the file's header, before the model is built: a header
asking for a huge model costs nothing (the comparison uses a model on PyTorch's ``meta`` device,
which holds no memory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from defr.errors import ConfigError, DefrError
from defr.files import atomic_path
from defr.jsonio import JsonInputError, parse_json
from defr.model.defr import DEFR, DEFRConfig
from defr.model.state_dicts import state_dict_problems

CHECKPOINT_FORMAT = "defr-checkpoint/1"


class CheckpointError(DefrError, ValueError):
    """A file that is not a usable DEFR checkpoint; the message names the file and what is wrong."""


class NotACheckpointError(CheckpointError):
    """A file that is not a DEFR checkpoint at all (not safetensors, or a header that is not ours),
    as opposed to one of ours that is broken."""


def save_checkpoint(model: DEFR, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``model`` as one safetensors file whose header records its ``DEFRConfig``.

    metadata: JSON-able facts about the weights (epoch, training config), stored in the header.
    Written to a temporary name in the same folder, then renamed: never half-written.
    """
    from safetensors.torch import save

    header = {"format": CHECKPOINT_FORMAT, "config": json.dumps(model.cfg.to_dict())}
    if metadata:
        header["metadata"] = json.dumps(metadata)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = save(state, metadata=header)  # written by Python: a full disk is an OSError (ENOSPC), not safetensors'
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def read_checkpoint_header(path: str | os.PathLike) -> dict:
    """The safetensors header metadata of a DEFR checkpoint; CheckpointError if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise NotACheckpointError(f"{path}: not a DEFR checkpoint (not a safetensors file: {e})") from None
    if header.get("format") != CHECKPOINT_FORMAT:
        raise NotACheckpointError(f"{path}: not a DEFR checkpoint (header format {header.get('format')!r})")
    return header


def checkpoint_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` a checkpoint was saved with (``{}`` when none)."""
    header = read_checkpoint_header(path)
    return _json_field(header, "metadata", path) if "metadata" in header else {}


def checkpoint_config(path: str | os.PathLike) -> DEFRConfig:
    """The ``DEFRConfig`` recorded in a checkpoint's header, validated."""
    config = _json_field(read_checkpoint_header(path), "config", path)
    try:
        return DEFRConfig.from_dict(config)
    except ConfigError as e:
        raise CheckpointError(f"{path}: the config in the header: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(
            f"{path}: the config in the header is not a valid DEFRConfig ({type(e).__name__}: {e})"
        ) from None


def _json_field(header: dict, key: str, path) -> dict:
    try:
        value = parse_json(header.get(key, ""), f"{path}: the {key!r} entry of the header")
    except JsonInputError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: the {key!r} entry of the header is not a JSON object")
    return value


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> DEFR:
    """Rebuild the model recorded in a checkpoint written by ``save_checkpoint``; eval mode."""
    from safetensors.torch import load_file

    cfg = checkpoint_config(path)
    with torch.device("meta"):  # the config's model without memory, to compare with the file's shapes
        skeleton = DEFR(cfg)
    problems = state_dict_problems(skeleton, _tensor_shapes(path))
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match its config: {problems}")
    model = DEFR(cfg)
    try:
        state = load_file(str(path), device=str(map_location))
    except Exception as e:  # a header that parses over a truncated or corrupt body
        raise CheckpointError(f"{path}: cannot read the tensors ({type(e).__name__}: {e})") from None
    check_weights(model, state, path)
    model.load_state_dict(state)
    return model.to(map_location).eval()


def _tensor_shapes(path) -> dict[str, torch.Tensor]:
    """The file's tensors as ``meta`` tensors of their shapes (read from the header, no data read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}  # noqa: SIM118 (not iterable)
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise CheckpointError(f"{path}: cannot read the tensors' shapes ({type(e).__name__}: {e})") from None


def check_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """CheckpointError naming ``path`` when ``state`` does not fit ``model`` or holds NaN / inf."""
    problems = state_dict_problems(model, state)
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match its config: {problems}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights (NaN or inf) in {len(bad)} tensor(s): {', '.join(bad[:4])}")


def load_model(path: str | os.PathLike, image_size: int | None = None) -> DEFR:
    """Any DEFR model file: our safetensors checkpoint or the released DEFR ``.pth`` (eval mode, CPU).

    image_size: input size in px (None: the file's); another size interpolates the positional
    embedding. Raises ``CheckpointError`` naming the file and why it is neither kind.
    """
    from defr.errors import ConfigError
    from defr.model.official import is_official_checkpoint, load_official_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    if is_official_checkpoint(path):
        try:
            model = load_official_checkpoint(path)
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    else:
        try:
            model = load_checkpoint(path)
        except NotACheckpointError:
            raise NotACheckpointError(
                f"{path}: not a DEFR checkpoint: neither defr's (.safetensors with a '{CHECKPOINT_FORMAT}' "
                "header) nor the released DEFR .pth (a torch file with 'model_state_dict')"
            ) from None
    return model if image_size is None else model.at_image_size(image_size)
