"""A synthetic HOI data set in HICO's and HICO-DET's official layouts, learnable by a tiny ViT on a CPU.

Every image holds 1-4 human-object pairs. Humans are stick figures (head, torso, arms, legs) whose
pose and position relative to the object express the verb: a rider sits on top of a horse with
legs around it, a kicker's leg reaches a ball at foot level, a kite flier's string runs from a
raised hand to a kite high above, a person with no interaction stands apart with arms down.
Objects are drawn by shape and colour (palettes per object), with random sizes, mirror images,
background clutter and noise. Classes are real HICO (verb, object) classes with power-law train
frequencies and a pinned tail: a few classes have exactly one training image, several ≤ 5 or ≤ 10.

Output (``OUT``): ``anno.mat`` (HICO classification: list_action, list_train/test,
anno_train/test), ``images/{train,test}2015/*.jpg``, ``instances_{train,test}2015.json``
(HICO-DET: 1-based inclusive pixel boxes per pair) and ``few_shot_classes.json``.

One module per idea: ``shapes`` (drawing primitives), ``figure`` (the human), ``objects`` (the
object catalogue), ``scenes`` (one pair per verb), ``images`` (still images), ``dataset`` (the data
set writer and class frequencies), ``video`` (moving scenes, their boxes and interaction spans),
``classes`` (the class list and ``ConfigError``), ``settings`` (``default`` and ``crowded`` scenes),
``stats`` (scene statistics: pairs, people, box sizes, spacing).
"""

from defr.data.synth.classes import CLASSES
from defr.data.synth.dataset import (
    TEST_TAIL,
    TRAIN_TAIL,
    assign_classes,
    class_counts,
    generate_synthetic,
)
from defr.data.synth.images import Annotation, draw_image
from defr.data.synth.video import SyntheticVideo, VideoScript, generate_synthetic_video

__all__ = [
    "CLASSES",
    "TEST_TAIL",
    "TRAIN_TAIL",
    "Annotation",
    "SyntheticVideo",
    "VideoScript",
    "assign_classes",
    "class_counts",
    "draw_image",
    "generate_synthetic",
    "generate_synthetic_video",
]
