"""The HICO / HICO-DET vocabulary: 117 verbs, 80 objects, 600 (verb, object) HOI classes.

The data lives in ``defr/assets/hico_vocabulary.json`` (built by
``tools/build_vocabulary.py`` from the class metadata of HICO-DET). Objects use HICO's
alphabetical 80-object indexing (``person`` is 49), not COCO's.

Prompts turn a class into the sentence a text encoder embeds: ``ride bicycle`` reads
"a person riding a bicycle". ``no_interaction`` classes read "a person and a bicycle" — the
sentence names both parties and no action, which is what the class means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from defr.jsonio import parse_json

NUM_CLASSES = 600
NUM_OBJECTS = 80
NUM_VERBS = 117
PERSON = 49
DEFAULT_TEMPLATES = ("{}",)
FEW_SHOT_SIZES = (1, 5, 10)  # Few@k: classes with at most k training images

_DOUBLED = {"cut", "run", "hop", "sit", "stop", "tag", "pet", "flip", "zip", "hug", "drag", "stab", "set", "sip"}


@dataclass(frozen=True)
class Vocabulary:
    """Class metadata; every list is indexed by the id named in its field."""

    verbs: list[str]
    objects: list[str]
    hoi_verb: list[int]
    hoi_object: list[int]
    rare: list[int]
    few: dict[int, list[int]] = field(default_factory=dict)
    coco80_to_hico: dict[int, int] = field(default_factory=dict)
    coco91_to_hico: dict[int, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.hoi_verb)

    @property
    def non_rare(self) -> list[int]:
        rare = set(self.rare)
        return [c for c in range(self.num_classes) if c not in rare]

    def class_name(self, hoi: int) -> str:
        """``"ride bicycle"``: verb and object, underscores kept inside each word."""
        return f"{self.verbs[self.hoi_verb[hoi]]} {self.objects[self.hoi_object[hoi]]}"

    @property
    def class_names(self) -> list[str]:
        return [self.class_name(c) for c in range(self.num_classes)]

    def phrase(self, hoi: int) -> str:
        """The natural-language phrase of one class, e.g. ``a person riding a bicycle``."""
        return hoi_phrase(self.verbs[self.hoi_verb[hoi]], self.objects[self.hoi_object[hoi]])

    def prompts(self, templates: tuple[str, ...] = DEFAULT_TEMPLATES) -> list[list[str]]:
        """One list of sentences per class, one per template (``"a photo of {}"``)."""
        return [[t.format(self.phrase(c)) for t in templates] for c in range(self.num_classes)]

    def classes_of_object(self, obj: int) -> list[int]:
        return [c for c, o in enumerate(self.hoi_object) if o == obj]


def gerund(verb: str) -> str:
    """English -ing form of the single-word HICO verbs (``ride`` → ``riding``)."""
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb in _DOUBLED:
        return verb + verb[-1] + "ing"
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    return verb + "ing"


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


@cache
def hico() -> Vocabulary:
    """The 600-class HICO vocabulary shipped with the package."""
    raw = parse_json(
        resources.files("defr.assets").joinpath("hico_vocabulary.json").read_bytes(), "hico_vocabulary.json"
    )
    return Vocabulary(
        verbs=raw["verbs"],
        objects=raw["objects"],
        hoi_verb=raw["hoi_verb"],
        hoi_object=raw["hoi_object"],
        rare=raw["rare"],
        few={1: raw["few_1"], 5: raw["few_5"], 10: raw["few_10"]},
        coco80_to_hico={int(k): v for k, v in raw["coco80_to_hico"].items()},
        coco91_to_hico={int(k): v for k, v in raw["coco91_to_hico"].items()},
    )


def hoi_phrase(verb: str, obj: str) -> str:
    """``("ride", "bicycle")`` → ``"a person riding a bicycle"``; ``no_interaction`` → ``"a person and a bicycle"``."""
    obj = _with_article(obj.replace("_", " "))
    if verb == "no_interaction":
        return f"a person and {obj}"
    words = verb.split("_")
    return " ".join(["a person", gerund(words[0]), *words[1:], obj])
