"""Backbones by name: architecture (offline, recorded in checkpoints) and pretrained weights.

Names:
- ``tiny-vit``: a small random-init ViT (16-pixel patches from a conv stem, width 192, 4 blocks) for tests and demos.
- open_clip ViTs by model name: ``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, … (OpenAI CLIP naming).
  The architecture comes from open_clip's model config; QuickGELU is a property of the weights
  (``*-quickgelu`` names, or a pretrained tag such as ``openai`` whose weights were trained with it).
- timm models as ``timm/<name>`` (a pretrained tag may follow: ``timm/vit_base_patch16_224.augreg_in21k``):
  plain class-token ViTs (``timm/vit_base_patch16_224``) are converted; other architectures
  (``timm/resnet50``) stay timm modules giving the pooled feature.

Every ViT becomes a ``defr.model.vit.VisionTransformer``; ResNets stay timm modules and can
classify but not do pair attention.

Weights (``load_pretrained``) come from a tag (open_clip's ``openai``, ``laion2b_s34b_b88k``, …, or
``timm`` for timm's default hub weights; needs network) or a local file (``.safetensors`` or a
torch file read with ``weights_only=True``): open_clip full-model or visual-only state dicts and
timm state dicts are renamed into our parameter names; positional embeddings are interpolated to
the requested grid.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from defr.model.vit import VisionTransformer, ViTConfig, resize_positional_embedding

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class UnknownBackboneError(ValueError):
    pass


class UnsupportedBackboneError(ValueError):
    """A known model whose architecture our ViT cannot represent (layer scale, register tokens, …)."""


class PretrainedWeightsError(ValueError):
    """Weights that cannot be fetched, read, or do not fit the backbone."""


@dataclass
class BackboneSpec:
    """Everything needed to rebuild a backbone's architecture without downloading anything."""

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    vit: ViTConfig | None = None  # set for ViTs
    timm_name: str | None = None  # set for non-ViT timm models
    feature_dim: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BackboneSpec:
        d = dict(d)
        if d.get("vit") is not None:
            d["vit"] = ViTConfig(**d["vit"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def tiny_vit_spec(image_size: int) -> BackboneSpec:
    vit = ViTConfig(image_size=image_size, patch_size=16, width=192, layers=4, heads=3, stem="conv")
    return BackboneSpec("tiny-vit", image_size, CLIP_MEAN, CLIP_STD, vit=vit, feature_dim=vit.width)


def backbone_spec(name: str, image_size: int, pretrained: str | None = None) -> BackboneSpec:
    """The architecture of backbone ``name`` at input size ``image_size`` (no weights, no network).

    ``pretrained``: the weights that will be loaded, when known. An open_clip tag decides the
    activation (QuickGELU for OpenAI-trained weights) and mean/std. A file cannot tell: for a local
    copy of OpenAI-trained weights name the ``*-quickgelu`` model (``ViT-B-16-quickgelu``).
    """
    if name == "tiny-vit":
        return tiny_vit_spec(image_size)
    if name.startswith("timm/"):
        return timm_spec(name, image_size)
    if _open_clip_config(name) is not None:
        return open_clip_spec(name, image_size, pretrained)
    raise UnknownBackboneError(
        f"unknown backbone {name!r}: use 'tiny-vit', an open_clip ViT name such as 'ViT-B-16', "
        "or 'timm/<model>' such as 'timm/vit_base_patch16_224' or 'timm/resnet50'"
    )


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """A randomly initialised backbone of the given architecture; forward: [B, 3, S, S] → [B, D]."""
    if spec.vit is not None:
        return VisionTransformer(spec.vit)
    if spec.timm_name is not None:
        import timm

        return timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    raise UnknownBackboneError(f"cannot build backbone {spec.name!r}")


# --- open_clip -------------------------------------------------------------------------------------------------

# Vision options our ViT represents; any other option set away from open_clip's default is rejected.
_OPEN_CLIP_SUPPORTED = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio", "no_ln_pre"}
# Options that change neither the weights nor the class-token feature.
_OPEN_CLIP_IGNORED = {"output_tokens", "patch_dropout", "final_ln_after_pool"}


def _open_clip_config(name: str) -> dict | None:
    try:
        import open_clip
    except ImportError:
        return None
    return open_clip.get_model_config(name)


def _is_file_like(pretrained: str) -> bool:
    return os.path.exists(pretrained) or os.sep in pretrained or pretrained.endswith(WEIGHT_SUFFIXES)


def _open_clip_tag_cfg(name: str, tag: str) -> dict:
    """open_clip's record of pretrained tag ``tag`` for model ``name`` (url, hub file, mean/std, quick_gelu)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise PretrainedWeightsError(
            f"open_clip has no pretrained tag {tag!r} for {name}: known tags {tags}, or pass a local weights file"
        )
    return cfg


def open_clip_spec(name: str, image_size: int, pretrained: str | None = None) -> BackboneSpec:
    """An open_clip ViT's architecture from its model config, at input size ``image_size``."""
    from open_clip.model import CLIPVisionCfg

    cfg = _open_clip_config(name)
    if cfg is None:
        raise UnknownBackboneError(f"unknown open_clip model {name!r}")
    v = dict(cfg["vision_cfg"])
    if v.get("timm_model_name"):
        raise UnsupportedBackboneError(
            f"open_clip model {name!r} has a timm vision tower ({v['timm_model_name']}): use 'timm/<model>' instead"
        )
    if isinstance(v.get("layers"), (list, tuple)):
        raise UnsupportedBackboneError(f"open_clip model {name!r} is a modified-ResNet CLIP, not a ViT")
    defaults = asdict(CLIPVisionCfg())
    norm_kwargs = v.pop("norm_kwargs", None) or {}
    if set(norm_kwargs) - {"eps"}:
        raise UnsupportedBackboneError(f"open_clip model {name!r}: unsupported norm options {norm_kwargs}")
    exotic = {
        k: val
        for k, val in v.items()
        if k not in _OPEN_CLIP_SUPPORTED | _OPEN_CLIP_IGNORED and val != defaults.get(k, object())
    }
    if exotic:
        raise UnsupportedBackboneError(
            f"open_clip model {name!r} uses vision options our ViT does not support: {exotic} "
            "(we need class-token pooling, learned positional embeddings, no layer scale or attention pooling)"
        )
    size, patch = v.get("image_size", defaults["image_size"]), v.get("patch_size", defaults["patch_size"])
    if isinstance(size, (list, tuple)) or isinstance(patch, (list, tuple)):
        raise UnsupportedBackboneError(f"open_clip model {name!r}: non-square image or patch size ({size}, {patch})")
    width = v.get("width", defaults["width"])
    head_width = v.get("head_width", defaults["head_width"])
    quick_gelu = bool(cfg.get("quick_gelu", False))
    mean, std = CLIP_MEAN, CLIP_STD
    if pretrained and not _is_file_like(pretrained):
        tag_cfg = _open_clip_tag_cfg(name, pretrained)
        quick_gelu = quick_gelu or bool(tag_cfg.get("quick_gelu", False))
        mean, std = tuple(tag_cfg.get("mean", mean)), tuple(tag_cfg.get("std", std))
    vit = ViTConfig(
        image_size=image_size,
        patch_size=patch,
        width=width,
        layers=v.get("layers", defaults["layers"]),
        heads=width // head_width,
        mlp_ratio=v.get("mlp_ratio", defaults["mlp_ratio"]),
        act="quick_gelu" if quick_gelu else "gelu",
        ln_pre=not v.get("no_ln_pre", False),
        norm_eps=norm_kwargs.get("eps", 1e-5),
    )
    extra = {"source": "open_clip", "pretrain_image_size": size, "embed_dim": cfg["embed_dim"]}
    return BackboneSpec(name, image_size, mean, std, vit=vit, feature_dim=width, extra=extra)


# --- timm ------------------------------------------------------------------------------------------------------


def _timm_meta_model(timm_name: str) -> nn.Module:
    """The timm model's structure without allocating or initialising weights."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(timm_name, pretrained=False)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise UnknownBackboneError(f"unknown timm model {timm_name!r} (backbone 'timm/{timm_name}')") from None
        raise


def _timm_vit_config(m: nn.Module, image_size: int, name: str) -> tuple[ViTConfig, bool]:
    """Our ViTConfig for a timm VisionTransformer (and whether its qkv has a bias); unsupported → error."""
    from timm.layers import Attention, Mlp, PatchEmbed
    from timm.layers.activations import QuickGELU
    from timm.models.vision_transformer import Block
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    def identity(module: nn.Module | None) -> bool:
        return module is None or isinstance(module, nn.Identity)

    if type(m) is not TimmViT:
        raise UnsupportedBackboneError(
            f"timm model {name!r} is a {type(m).__name__}, not a plain timm VisionTransformer our ViT can represent"
        )
    problems = []
    if getattr(m, "cls_token", None) is None:
        problems.append("no class token")
    if getattr(m, "num_reg_tokens", 0):
        problems.append("register tokens")
    if getattr(m, "no_embed_class", False) or getattr(m, "pos_embed", None) is None:
        problems.append("no learned positional embedding for the class token")
    if getattr(m, "global_pool", "token") != "token":
        problems.append(f"{m.global_pool!r} pooling instead of the class token")
    if not identity(getattr(m, "fc_norm", None)) or getattr(m, "attn_pool", None) is not None:
        problems.append("fc_norm / attention pooling head")
    pe = m.patch_embed
    if type(pe) is not PatchEmbed or not identity(getattr(pe, "norm", None)):
        problems.append("non-standard patch embedding")
    elif pe.img_size[0] != pe.img_size[1] or pe.patch_size[0] != pe.patch_size[1]:
        problems.append(f"non-square image or patch size {pe.img_size}, {pe.patch_size}")
    norms = [m.norm] + ([] if identity(m.norm_pre) else [m.norm_pre])
    acts = set()
    for b in m.blocks:
        if type(b) is not Block or type(b.attn) is not Attention or type(b.mlp) is not Mlp:
            problems.append(f"block type {type(b).__name__}")
            break
        if not (identity(b.ls1) and identity(b.ls2)):
            problems.append("layer scale")
        if not (identity(b.attn.q_norm) and identity(b.attn.k_norm)):
            problems.append("qk_norm")
        if not (identity(getattr(b.attn, "norm", None)) and identity(getattr(b.mlp, "norm", None))):
            problems.append("inner norms in attention / MLP")
        if b.attn.proj.bias is None or b.mlp.fc1.bias is None or b.mlp.fc2.bias is None:
            problems.append("linear layers without bias")
        norms += [b.norm1, b.norm2]
        acts.add(type(b.mlp.act))
        if isinstance(b.mlp.act, nn.GELU) and b.mlp.act.approximate != "none":
            problems.append("tanh-approximate GELU")
    if not all(isinstance(n, nn.LayerNorm) for n in norms) or len({n.eps for n in norms}) > 1:
        problems.append("norm layers other than one LayerNorm kind")
    if acts - {nn.GELU, QuickGELU}:
        problems.append(f"activation {sorted(a.__name__ for a in acts)}")
    if problems:
        raise UnsupportedBackboneError(
            f"timm model {name!r} is a ViT variant our ViT cannot represent: {', '.join(dict.fromkeys(problems))}"
        )
    b = m.blocks[0]
    vit = ViTConfig(
        image_size=image_size,
        patch_size=pe.patch_size[0],
        width=m.embed_dim,
        layers=len(m.blocks),
        heads=b.attn.num_heads,
        mlp_ratio=b.mlp.fc1.out_features / m.embed_dim,
        act="quick_gelu" if acts == {QuickGELU} else "gelu",
        ln_pre=not identity(m.norm_pre),
        patch_bias=pe.proj.bias is not None,
        norm_eps=m.norm.eps,
    )
    return vit, b.attn.qkv.bias is not None


def _timm_classifiers(m: nn.Module) -> list[str]:
    names = m.pretrained_cfg.get("classifier") or []
    return [names] if isinstance(names, str) else list(names)


def timm_spec(name: str, image_size: int) -> BackboneSpec:
    """``timm/<model>``: ViTs become our VisionTransformer, other models stay timm modules."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    timm_name = name.removeprefix("timm/")
    m = _timm_meta_model(timm_name)
    mean = tuple(m.pretrained_cfg.get("mean", IMAGENET_MEAN))
    std = tuple(m.pretrained_cfg.get("std", IMAGENET_STD))
    extra = {"source": "timm", "timm_model": timm_name, "classifier": _timm_classifiers(m)}
    if isinstance(m, TimmViT) or timm_name.startswith("vit_"):
        vit, qkv_bias = _timm_vit_config(m, image_size, timm_name)
        extra.update(pretrain_image_size=m.patch_embed.img_size[0], qkv_bias=qkv_bias)
        return BackboneSpec(name, image_size, mean, std, vit=vit, feature_dim=vit.width, extra=extra)
    m.reset_classifier(0)
    # The pooled feature's size, from a shape-only forward (num_features misses pre-logits layers).
    dim = m(torch.empty(1, 3, image_size, image_size, device="meta")).shape[-1]
    return BackboneSpec(name, image_size, mean, std, timm_name=timm_name, feature_dim=dim, extra=extra)


# --- weights ---------------------------------------------------------------------------------------------------


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


def _fetch_error(what: str, reason: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(
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


def resolve_weights(spec: BackboneSpec, pretrained: str) -> Path:
    """A local weights file for ``pretrained``: the file itself, or the tag's download (network or cache)."""
    if _is_file_like(pretrained):
        path = Path(pretrained)
        if not path.is_file():
            raise PretrainedWeightsError(f"{pretrained}: no such weights file")
        return path
    source = spec.extra.get("source")
    what = f"{pretrained!r} for {spec.name}"
    if source == "open_clip":
        cfg = _open_clip_tag_cfg(spec.name, pretrained)
        if "file" in cfg:
            return Path(cfg["file"])
        if cfg.get("hf_hub"):
            repo_id, filename = os.path.split(cfg["hf_hub"])
            return Path(_hf_file(repo_id, _safe_alternatives(filename or "open_clip_pytorch_model.bin"), what))
        return Path(_url_file(cfg["url"], what))
    if source == "timm":
        if pretrained != "timm":
            raise PretrainedWeightsError(
                f"timm backbones take pretrained='timm' (the default hub weights of {spec.name}; put another tag "
                f"in the name, e.g. 'timm/<model>.<tag>') or a local file, not {pretrained!r}"
            )
        cfg = _timm_meta_model(spec.extra["timm_model"]).pretrained_cfg
        if cfg.get("hf_hub_id"):
            repo_id = cfg["hf_hub_id"].split("@")[0]
            names = (
                [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
            )
            return Path(_hf_file(repo_id, names, what))
        if cfg.get("url"):
            return Path(_url_file(cfg["url"], what))
        raise PretrainedWeightsError(f"timm model {spec.name} has no default pretrained weights")
    raise PretrainedWeightsError(f"backbone {spec.name!r} has no pretrained tags (asked for {pretrained!r})")


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch file read with ``weights_only=True``."""
    path = str(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, pickled code, TorchScript archive, …: all mean "not a weights file"
        raise PretrainedWeightsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict of tensors")
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
    heads = tuple(f"{c}." for c in spec.extra.get("classifier", ["head"]))
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
    if not spec.extra.get("qkv_bias", True):  # timm ViTs with qkv_bias=False: our attention's bias stays zero
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


def _summarise(keys: list[str], limit: int = 6) -> str:
    """``transformer.resblocks.*.ln_1.weight, … (+N more)``: block indices folded, a few shown."""
    folded = list(dict.fromkeys(re.sub(r"\.\d+\.", ".*.", k) for k in keys))
    more = f", … (+{len(folded) - limit} more)" if len(folded) > limit else ""
    return f"{len(keys)} [{', '.join(folded[:limit])}{more}]"


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state)`` with every missing, unexpected or mis-shaped key reported."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [f"missing {_summarise(missing)}" if missing else ""]
        parts += [f"unexpected {_summarise(unexpected)}" if unexpected else ""]
        parts += [f"wrong shapes {shapes[:4]}" if shapes else ""]
        raise PretrainedWeightsError(f"{source}: weights do not fit the backbone: {'; '.join(p for p in parts if p)}")
    module.load_state_dict(state)


def _check_quick_gelu(spec: BackboneSpec, pretrained: str) -> None:
    """open_clip tags know whether their weights were trained with QuickGELU; the spec must agree."""
    if spec.extra.get("source") != "open_clip" or _is_file_like(pretrained):
        return
    trained = bool(_open_clip_tag_cfg(spec.name, pretrained).get("quick_gelu", False))
    if trained != (spec.vit.act == "quick_gelu"):
        raise PretrainedWeightsError(
            f"weights {pretrained!r} of {spec.name} were trained with {'QuickGELU' if trained else 'GELU'} but the "
            f"backbone uses {spec.vit.act}: build it with backbone_spec({spec.name!r}, size, pretrained={pretrained!r})"
        )


def load_pretrained(backbone: nn.Module, spec: BackboneSpec, pretrained: str) -> dict:
    """Load weights into ``backbone`` from a tag (hub, needs network) or a local file.

    Returns a dict of extras the weights came with: ``{"visual_proj": P [D, E]}`` for CLIP weights
    (CLIP's visual projection, which the official head folds into the classifier), else ``{}``.
    """
    if spec.vit is None and spec.timm_name is None:
        raise PretrainedWeightsError(f"backbone {spec.name!r} has no pretrained weights (asked for {pretrained!r})")
    if spec.vit is not None:
        _check_quick_gelu(spec, pretrained)
    path = resolve_weights(spec, pretrained)
    state = load_state_file(path)
    source = f"{path} (for {spec.name})"
    if spec.vit is None:
        heads = tuple(f"{c}." for c in spec.extra.get("classifier", []))
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
            raise PretrainedWeightsError(f"{source}: {e}") from None
    load_state_strict(backbone, state, source)
    return extras
