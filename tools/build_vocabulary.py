"""Derive the package's HICO vocabulary asset from the class metadata in ../shared.

Only class-level facts are kept (names, verb/object of each HOI class, rare and few-shot
lists, COCO label maps); no annotation is copied. Run from the repository root:

    python tools/build_vocabulary.py ../shared defr/assets/hico_vocabulary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def build(shared: Path) -> dict:
    meta = json.loads((shared / "hicodet" / "instances_test2015.json").read_text())
    few = json.loads((shared / "hico" / "few_shot_classes.json").read_text())
    corr = meta["correspondence"]
    if [c[0] for c in corr] != list(range(600)):
        raise ValueError("correspondence is not ordered by HOI class id")
    return {
        "format": "defr-vocabulary/1",
        "verbs": meta["verbs"],
        "objects": meta["objects"],
        "hoi_object": [c[1] for c in corr],
        "hoi_verb": [c[2] for c in corr],
        "rare": sorted(meta["rare"]),
        "few_1": sorted(few["few_1"]),
        "few_5": sorted(few["few_5"]),
        "few_10": sorted(few["few_10"]),
        "coco80_to_hico": {
            int(k) - 1: v for k, v in json.loads((shared / "hicodet" / "coco80tohico80.json").read_text()).items()
        },
        "coco91_to_hico": {
            int(k): v for k, v in json.loads((shared / "hicodet" / "coco91tohico80.json").read_text()).items()
        },
    }


if __name__ == "__main__":
    out = Path(sys.argv[2])
    out.write_text(json.dumps(build(Path(sys.argv[1]))) + "\n")
    print(f"wrote {out}")
