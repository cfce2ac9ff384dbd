"""Image–caption pairs for contrastive pretraining, drawn on the fly from the synthetic renderer.

Two rules keep pretraining apart from everything it is later judged on:

- **Seeds.** Every pretraining image comes from a seed ``>= PRETRAIN_SEED_START`` (a training batch
  ``k`` from ``PRETRAIN_SEED_START + k``, the held-out zero-shot split from ``ZERO_SHOT_SEED_START``
  on); ``defr synth``, the demo, the effects benchmark and the video demo draw from seeds below it
  (``defr.data.synth.dataset.check_seed`` refuses a pretraining seed there).
- **Held-out combinations.** The (verb, object) classes in ``HELD_OUT`` never appear in a pretraining
  image or caption: their verbs and objects do, in other combinations. Zero-shot and few-shot scores on
  them say what the alignment gives on combinations it never saw, against those it saw described.

A caption is what the renderer knows of the scene: one clause per pair, "a person riding a bicycle; a
person holding a cup" (``defr.vocab.hoi_phrase`` of each class: the sentences the DEFR head is
initialised from). Half of every batch are **hard negatives** of the other half: the same classes in the
same setting with one pair's class swapped for another class with the same object (another verb) or the
same verb (another object), so telling captions apart needs the verb, not just the objects present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from defr import vocab
from defr.data.synth.classes import CLASSES
from defr.data.synth.images import Annotation, draw_image
from defr.data.synth.settings import SETTINGS
from defr.errors import ConfigError

PRETRAIN_SEED_START = 1_000_000_000
ZERO_SHOT_SEED_START = 1_500_000_000
SEED_END = 2**32  # numpy's seeds are < 2**32
# Four of the demo's eight few-shot classes, each of a verb and an object seen in other classes.
HELD_OUT = (("hold", "kite"), ("carry", "skateboard"), ("lie_on", "bench"), ("no_interaction", "sports_ball"))
HELD_OUT_CLASSES = tuple(CLASSES.index(c) for c in HELD_OUT)
PRETRAIN_CLASSES = tuple(c for c in range(len(CLASSES)) if c not in HELD_OUT_CLASSES)


def class_names() -> list[str]:
    """The synthetic classes as "verb object" names, as the HICO loader reads them from ``anno.mat``."""
    return [f"{verb} {obj}" for verb, obj in CLASSES]


def caption(classes: list[int]) -> str:
    """The caption of an image holding one pair per class: its clauses joined by "; "."""
    return "; ".join(vocab.hoi_phrase(*CLASSES[c]) for c in classes)


def hard_negative(rng: np.random.Generator, c: int, exclude: list[int]) -> int:
    """A pretraining class sharing ``c``'s object (another verb) or its verb (another object), not in
    ``exclude``; ``c`` itself when none is left."""
    verb, obj = CLASSES[c]
    options = [
        k for k in PRETRAIN_CLASSES if k != c and k not in exclude and (CLASSES[k][1] == obj or CLASSES[k][0] == verb)
    ]
    return int(rng.choice(options)) if options else c


@dataclass
class CaptionedImage:
    image: Image.Image
    annotation: Annotation  # classes and 0-based inclusive pixel boxes per pair
    caption: str


def check_evaluation_seed(seed: int) -> None:
    """Refuse a seed reserved for pretraining in a data set or video that a model is trained or scored on."""
    if seed >= PRETRAIN_SEED_START:
        raise ConfigError(
            f"seed {seed} is reserved for pretraining (seeds >= {PRETRAIN_SEED_START}): data sets and videos use "
            "smaller seeds, so that no pretraining image is ever trained or scored on"
        )


def check_pretraining_seed(seed: int) -> None:
    if not PRETRAIN_SEED_START <= seed < SEED_END:
        raise ConfigError(f"pretraining seeds are in [{PRETRAIN_SEED_START}, {SEED_END}), got {seed}")


def draw_pretraining_batch(seed: int, batch_size: int, size: int) -> list[CaptionedImage]:
    """``batch_size`` (even) captioned images from ``seed``: anchors, then one hard negative of each.

    Scenes mix both settings (separate cells; one crowded row), 1-4 pairs, classes uniform over
    ``PRETRAIN_CLASSES`` (no power law: pretraining describes every seen combination alike).
    """
    check_pretraining_seed(seed)
    if batch_size < 2 or batch_size % 2:
        raise ConfigError(f"batch_size must be an even number >= 2, got {batch_size}")
    rng = np.random.default_rng(seed)
    anchors = [_scene(rng) for _ in range(batch_size // 2)]
    siblings = []
    for classes, setting in anchors:
        k = int(rng.integers(len(classes)))
        swapped = list(classes)
        swapped[k] = hard_negative(rng, classes[k], classes)
        siblings.append((swapped, setting))
    return [_draw(rng, classes, setting, size) for classes, setting in anchors + siblings]


def draw_zero_shot_split(images: int, size: int) -> list[CaptionedImage]:
    """The held-out split of the pretraining log: ``images`` scenes from ``ZERO_SHOT_SEED_START``, every
    class of ``CLASSES`` (held-out ones included: that is what zero-shot scoring is for)."""
    rng = np.random.default_rng(ZERO_SHOT_SEED_START)
    every = tuple(range(len(CLASSES)))
    return [_draw(rng, *_scene(rng, every), size) for _ in range(images)]


def _scene(rng: np.random.Generator, pool: tuple[int, ...] = PRETRAIN_CLASSES) -> tuple[list[int], str]:
    """A scene's classes (distinct) and its setting's name."""
    name = str(rng.choice(list(SETTINGS)))
    probs = SETTINGS[name].pairs_per_image
    n = int(rng.choice(len(probs), p=probs)) + 1
    return [int(c) for c in rng.choice(pool, size=n, replace=False)], name


def _draw(rng: np.random.Generator, classes: list[int], setting: str, size: int) -> CaptionedImage:
    image, ann = draw_image(rng, classes, size, SETTINGS[setting])
    return CaptionedImage(image, ann, caption(classes))
