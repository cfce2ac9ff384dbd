"""Comparing a state dict with the module it is meant for: every problem reported at once."""

from __future__ import annotations

import re

import torch
from torch import nn


def state_dict_problems(module: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Missing, unexpected and mis-shaped keys of ``state`` for ``module``, as one line ("" when it fits)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = [f"missing {_summarise(missing)}" if missing else ""]
    parts += [f"unexpected {_summarise(unexpected)}" if unexpected else ""]
    parts += [f"wrong shapes {shapes[:4]}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def _summarise(keys: list[str], limit: int = 6) -> str:
    """``transformer.resblocks.*.ln_1.weight, … (+N more)``: block indices folded, a few shown."""
    folded = list(dict.fromkeys(re.sub(r"\.\d+\.", ".*.", k) for k in keys))
    more = f", … (+{len(folded) - limit} more)" if len(folded) > limit else ""
    return f"{len(keys)} [{', '.join(folded[:limit])}{more}]"
