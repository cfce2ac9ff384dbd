"""Pretrained backbone weights: from a hub tag (needs network) or a local file, renamed into our ViT.

Tags: open_clip's (``openai``, ``laion2b_s34b_b88k``, …) or ``timm`` for timm's default hub weights.
Files: ``.safetensors`` or a torch file read with ``weights_only=True``. open_clip full-model or
visual-only state dicts and timm state dicts are renamed into our parameter names; positional
embeddings are interpolated to the requested grid. Offline, a tag fails fast with one line that
says to pass a local file.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from defr.errors import ConfigError
from defr.jsonio import read_json
from defr.model.backbones import BackboneSpec, is_file_like, open_clip_tag_cfg, timm_meta_model
from defr.model.state_dicts import state_dict_problems
from defr.model.vit import resize_positional_embedding


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """Whether ``host`` answers within ``timeout`` s: without it a download would hang on retries."""
    if _hub_offline():
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _fetch_error(what: str, reason: str) -> ConfigError:
    return ConfigError(
        f"could not fetch pretrained weights {what} ({reason}); download them where there is network and "
        "pass the local file instead (pretrained=/path/to/weights.safetensors)"
    )


def _hf_file(repo_id: str, filenames: list[str], what: str) -> str:
    """The first of ``filenames`` in HF hub repo ``repo_id`` (from the cache when offline)."""
    from huggingface_hub import hf_hub_download

    online = hub_reachable()
    reasons = []
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename, local_files_only=not online)
        except Exception as e:  # hub errors have many types (offline, 404, gated); report the last
            reasons.append(f"{filename}: {type(e).__name__}")
    if online:
        state = "huggingface.co reachable"
    else:
        state = f"{'HF_HUB_OFFLINE is set' if _hub_offline() else 'huggingface.co unreachable'} and not in the cache"
    raise _fetch_error(f"{what} from hf.co/{repo_id}", f"{state}; tried {', '.join(reasons)}")


def _url_file(url: str, what: str) -> str:
    from open_clip.pretrained import download_pretrained_from_url

    if not hub_reachable(host=url.split("/")[2]):
        raise _fetch_error(f"{what} from {url}", "offline or host unreachable")
    return download_pretrained_from_url(url)


def _safe_alternatives(filename: str) -> list[str]:
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", filename]
    if filename.endswith((".bin", ".pth")):
        return [filename.rsplit(".", 1)[0] + ".safetensors", filename]
    return [filename]


# Weights that ship with the package (defr/assets/pretrained): (backbone, tag) → file name; each has a
# sidecar ``<file>.json`` with its SHA-256, size, the command, commit and seeds that made it.
BUILTIN_WEIGHTS = {("tiny-vit", "defr-synth"): "tiny-vit-defr-synth.safetensors"}


def builtin_sidecar(name: str, tag: str) -> dict:
    """The sidecar of the packaged weights ``tag`` of backbone ``name``; ConfigError if unknown."""
    if (name, tag) not in BUILTIN_WEIGHTS:
        known = ", ".join(f"{b} --pretrained {t}" for b, t in BUILTIN_WEIGHTS)
        raise ConfigError(f"backbone {name!r} has no packaged weights {tag!r} (packaged: {known})")
    path = _asset(BUILTIN_WEIGHTS[name, tag]).with_suffix(".json")
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: the packaged weights' sidecar cannot be read ({e})") from None


def builtin_weights(name: str, tag: str) -> Path:
    """The packaged weights file, after checking its size and SHA-256 against its sidecar (one line if not)."""
    meta = builtin_sidecar(name, tag)
    path = _asset(BUILTIN_WEIGHTS[name, tag])
    if not path.is_file():
        raise ConfigError(f"{path}: the packaged weights {tag!r} are missing (reinstall defr)")
    size = path.stat().st_size
    if size != meta.get("bytes"):
        raise ConfigError(
            f"{path}: {size} bytes, the sidecar says {meta.get('bytes')}: the packaged weights {tag!r} were changed "
            "or truncated (reinstall defr)"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != meta.get("sha256"):
        raise ConfigError(
            f"{path}: SHA-256 {digest[:12]}… is not the sidecar's {str(meta.get('sha256'))[:12]}…: the packaged "
            f"weights {tag!r} were changed (reinstall defr)"
        )
    return path


def _asset(file_name: str) -> Path:
    return Path(str(resources.files("defr.assets").joinpath("pretrained", file_name)))


def resolve_weights(spec: BackboneSpec, pretrained: str) -> Path:
    """A local weights file for ``pretrained``: the file itself, the packaged file of a builtin tag
    (``BUILTIN_WEIGHTS``, checked), or the tag's download (network or cache)."""
    if spec.source == "builtin" and not is_file_like(pretrained):
        return builtin_weights(spec.name, pretrained)
    if is_file_like(pretrained):
        path = Path(pretrained)
        if not path.is_file():
            raise ConfigError(f"{pretrained}: no such weights file")
        return path
    source = spec.source
    what = f"{pretrained!r} for {spec.name}"
    if source == "open_clip":
        cfg = open_clip_tag_cfg(spec.name, pretrained)
        if "file" in cfg:
            return Path(cfg["file"])
        if cfg.get("hf_hub"):
            repo_id, filename = os.path.split(cfg["hf_hub"])
            return Path(_hf_file(repo_id, _safe_alternatives(filename or "open_clip_pytorch_model.bin"), what))
        return Path(_url_file(cfg["url"], what))
    if source == "timm":
        if pretrained != "timm":
            raise ConfigError(
                f"timm backbones take pretrained='timm' (the default hub weights of {spec.name}; put another tag "
                f"in the name, e.g. 'timm/<model>.<tag>') or a local file, not {pretrained!r}"
            )
        cfg = timm_meta_model(spec.timm_model).pretrained_cfg
        if cfg.get("hf_hub_id"):
            repo_id = cfg["hf_hub_id"].split("@")[0]
            names = (
                [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
            )
            return Path(_hf_file(repo_id, names, what))
        if cfg.get("url"):
            return Path(_url_file(cfg["url"], what))
        raise ConfigError(f"timm model {spec.name} has no default pretrained weights")
    raise ConfigError(f"backbone {spec.name!r} has no pretrained tags (asked for {pretrained!r})")


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch file read with ``weights_only=True``."""
    path = str(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, pickled code, TorchScript archive, …: all mean "not a weights file"
        raise ConfigError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys under ``prefix`` with it removed, when some key has it; otherwise ``state`` unchanged."""
    if not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


_TIMM_TO_CLIP = [
    (r"^cls_token$", "class_embedding"),
    (r"^pos_embed$", "positional_embedding"),
    (r"^patch_embed\.proj\.", "conv1."),
    (r"^norm_pre\.", "ln_pre."),
    (r"^norm\.", "ln_post."),
    (r"^blocks\.(\d+)\.norm1\.", r"transformer.resblocks.\1.ln_1."),
    (r"^blocks\.(\d+)\.norm2\.", r"transformer.resblocks.\1.ln_2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"transformer.resblocks.\1.attn.in_proj_\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer.resblocks.\1.attn.out_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"transformer.resblocks.\1.mlp.c_fc."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"transformer.resblocks.\1.mlp.c_proj."),
]


def timm_vit_state(state: dict[str, torch.Tensor], spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """A timm ViT state dict renamed to our parameter names (classifier head dropped)."""
    heads = tuple(f"{c}." for c in spec.timm_head or ("head",))
    out = {}
    for key, value in state.items():
        if key.startswith(heads):
            continue
        for pattern, repl in _TIMM_TO_CLIP:
            new = re.sub(pattern, repl, key)
            if new != key:
                key = new
                break
        out[key] = value
    if "class_embedding" in out:
        out["class_embedding"] = out["class_embedding"].reshape(-1)
    if "positional_embedding" in out:
        out["positional_embedding"] = out["positional_embedding"].flatten(0, -2)
    if not spec.qkv_bias:  # timm ViTs with qkv_bias=False: our attention's bias stays zero
        for key in [k for k in out if k.endswith("attn.in_proj_weight")]:
            out[key.replace("in_proj_weight", "in_proj_bias")] = out[key].new_zeros(out[key].shape[0])
    return out


def vit_state(state: dict[str, torch.Tensor], spec: BackboneSpec) -> tuple[dict[str, torch.Tensor], dict]:
    """Any supported layout → (our ViT's state dict, extras); CLIP's visual ``proj`` goes to the extras."""
    state = _strip_prefix(state, "module.")
    state = _strip_prefix(state, "visual_encoder.visual.")  # a released DEFR checkpoint
    state = _strip_prefix(state, "visual.")  # an open_clip / OpenAI CLIP full model
    if "cls_token" in state or "patch_embed.proj.weight" in state:
        return timm_vit_state(state, spec), {}
    state = dict(state)
    proj = state.pop("proj", None)
    return state, ({} if proj is None else {"visual_proj": proj.float()})


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state)`` with every missing, unexpected or mis-shaped key reported."""
    problems = state_dict_problems(module, state)
    if problems:
        raise ConfigError(f"{source}: weights do not fit the backbone: {problems}")
    module.load_state_dict(state)


def _check_quick_gelu(spec: BackboneSpec, pretrained: str) -> None:
    """open_clip tags know whether their weights were trained with QuickGELU; the spec must agree."""
    if spec.source != "open_clip" or is_file_like(pretrained):
        return
    trained = bool(open_clip_tag_cfg(spec.name, pretrained).get("quick_gelu", False))
    if trained != (spec.vit.act == "quick_gelu"):
        raise ConfigError(
            f"weights {pretrained!r} of {spec.name} were trained with {'QuickGELU' if trained else 'GELU'} but the "
            f"backbone uses {spec.vit.act}: build it with backbone_spec({spec.name!r}, size, pretrained={pretrained!r})"
        )


def load_pretrained(backbone: nn.Module, spec: BackboneSpec, pretrained: str) -> dict:
    """Load weights into ``backbone`` from a tag (hub, needs network) or a local file.

    Returns a dict of extras the weights came with: ``{"visual_proj": P [D, E]}`` for CLIP weights
    (CLIP's visual projection, which the official head folds into the classifier), plus
    ``"aligned_text_encoder"`` for packaged weights (the text encoder their projection was trained
    against: ``defr pretrain``), else ``{}``.
    """
    if spec.vit is not None:
        _check_quick_gelu(spec, pretrained)
    path = resolve_weights(spec, pretrained)
    state = load_state_file(path)
    source = f"{path} (for {spec.name})"
    if spec.vit is None:
        heads = tuple(f"{c}." for c in spec.timm_head)
        state = {k: v for k, v in _strip_prefix(state, "module.").items() if not k.startswith(heads)}
        load_state_strict(backbone, state, source)
        return {}
    state, extras = vit_state(state, spec)
    if "positional_embedding" in state:
        try:
            state["positional_embedding"] = resize_positional_embedding(
                state["positional_embedding"], spec.vit.grid_size
            )
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
    load_state_strict(backbone, state, source)
    if spec.source == "builtin" and not is_file_like(pretrained):
        extras["aligned_text_encoder"] = builtin_sidecar(spec.name, pretrained)["text_encoder"]
    return extras
