"""Scene settings of the synthetic set: how many pairs an image holds, how they are laid out, which meet.

``default``: 1-4 pairs per image in separate cells (whole image, two halves or a 2 × 2 grid).

``crowded``: 1-4 people per image side by side in one row of overlapping columns, so neighbours
stand close (HICO-DET's test split, ``benchmarks/hicodet_stats.py``: 25 % of its images hold one
pair, the nearest other person stands a median 4 % of the image width away, a person is a median
0.39 of the image high). A class prefers images already holding a class with the same object
(``same_object``: the weight of such an image is multiplied by 1 + same_object), so two people
beside two objects of one kind, each doing something different with their own ("ride" beside
"no_interaction" horse), are common: scoring such a pair needs its boxes, the image's label alone
cannot say which person rides.
"""

from __future__ import annotations

from dataclasses import dataclass

from defr.errors import ConfigError


@dataclass(frozen=True)
class SceneSetting:
    pairs_per_image: tuple[float, ...]  # P(1 pair), P(2), ...
    layout: str  # "cells" or "row"
    same_object: float  # extra weight of an image that already holds a class with the same object
    overlap: float = 0.0  # row layout: how far each column reaches into its neighbours (fraction of a column)

    def __post_init__(self) -> None:
        if abs(sum(self.pairs_per_image) - 1.0) > 1e-9 or min(self.pairs_per_image) < 0:
            raise ConfigError(f"pairs_per_image must be probabilities summing to 1, got {self.pairs_per_image}")
        if self.layout not in ("cells", "row"):
            raise ConfigError(f"layout must be 'cells' or 'row', got {self.layout!r}")


SETTINGS = {
    "default": SceneSetting((0.45, 0.33, 0.15, 0.07), "cells", 0.0),
    "crowded": SceneSetting((0.25, 0.30, 0.25, 0.20), "row", 4.0, overlap=0.5),
}


def scene_setting(name: str) -> SceneSetting:
    """The setting called ``name`` (``SETTINGS``); ConfigError naming the choices otherwise."""
    if name not in SETTINGS:
        raise ConfigError(f"unknown synthetic setting {name!r}; choose one of {', '.join(SETTINGS)}")
    return SETTINGS[name]
