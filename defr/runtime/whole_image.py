"""No mask at all: the baseline of the mask study (``defr.eval.mask_effect``, ``benchmarks/mask_modes.py``).

``WholeImageBackend`` wraps a ``TorchBackend`` and gives every pair its image's logits, what detection
would be without DEFR's pair masking. It is a study's baseline, not a runtime: no model file opens as it.
"""

from __future__ import annotations

from defr.choices import MASK_MODES
from defr.runtime.backends import TorchBackend

STUDY_MASK_MODES = (*MASK_MODES, "none")  # the two masks, and no mask at all


class WholeImageBackend:
    """A ``TorchBackend`` whose pair logits are each pair's image logits: no mask at all (every pair of an
    image scored alike), what detection would be without DEFR's masking."""

    def __init__(self, backend: TorchBackend):
        self.backend = backend
        self.name, self.precision, self.meta = "torch-no-mask", backend.precision, backend.meta
        self.accepts_no_pairs, self.device, self.mask_mode = True, backend.device, "none"

    def __call__(self, images, boxes_h, boxes_o, pair_index):
        _, image_logits = self.backend(images, boxes_h, boxes_o, pair_index)
        return image_logits[pair_index.to(image_logits.device)], image_logits
