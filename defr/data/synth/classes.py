"""The HICO (verb, object) classes the synthetic set draws, in decreasing train frequency, and its error."""

from __future__ import annotations

# (verb, object) in decreasing train frequency: the body follows a power law, the last len(TRAIN_TAIL) are pinned.
CLASSES = (
    ("ride", "bicycle"),
    ("ride", "horse"),
    ("sit_on", "chair"),
    ("no_interaction", "horse"),
    ("fly", "kite"),
    ("kick", "sports_ball"),
    ("hold", "cup"),
    ("walk", "dog"),
    ("stand_on", "skateboard"),
    ("stand_under", "umbrella"),
    ("no_interaction", "bicycle"),
    ("throw", "sports_ball"),
    ("drink_with", "cup"),
    ("carry", "surfboard"),
    ("sit_on", "bench"),
    ("no_interaction", "dog"),
    ("lie_on", "bed"),
    ("hold", "sports_ball"),
    ("carry", "suitcase"),
    ("pet", "dog"),
    ("ride", "elephant"),
    ("hold", "kite"),
    ("carry", "skateboard"),
    ("lie_on", "bench"),
    ("no_interaction", "chair"),
    ("no_interaction", "sports_ball"),
    ("ride", "motorcycle"),
    ("drag", "suitcase"),
)
