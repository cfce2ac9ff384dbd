"""Multi-label losses over HOI classes.

All take ``logits`` [B, C] and 0/1 ``targets`` [B, C], an optional boolean ``ignore`` [B, C]
(entries left out of the loss), and reduce per-sample losses (summed over classes) over the
batch with ``reduction`` in {"mean", "sum", "none"}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from defr.errors import ConfigError

REDUCTIONS = ("mean", "sum", "none")


def lse_sign_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore: torch.Tensor | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """LSE-Sign (DEFR Eq. 2): ``log(1 + Σ_i exp(−y_i·s_i))`` with ``y_i = ±1``.

    Computed as a log-sum-exp over ``[0, −y_1 s_1, …]`` so it stays finite for any finite logits;
    its gradient is ``−y_i·softmax_i`` over that vector (the worst class gets the largest share).
    """
    _check(logits, targets, ignore)
    signed = -(2.0 * targets.to(logits.dtype) - 1.0) * logits
    if ignore is not None:
        signed = signed.masked_fill(ignore, float("-inf"))
    zero = signed.new_zeros(signed.shape[0], 1)
    return _reduce(torch.logsumexp(torch.cat([zero, signed], dim=1), dim=1), reduction)


def bce(
    logits: torch.Tensor, targets: torch.Tensor, ignore: torch.Tensor | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy, summed over classes."""
    _check(logits, targets, ignore)
    per_entry = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return _reduce(_sum_classes(per_entry, ignore), reduction)


def weighted_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: torch.Tensor,
    ignore: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """BCE with positives of class c weighted by ``pos_weight[c]`` ([C], usually #neg/#pos of c)."""
    _check(logits, targets, ignore)
    if pos_weight.shape != logits.shape[1:]:
        raise ConfigError(f"pos_weight must have shape [{logits.shape[1]}], got {list(pos_weight.shape)}")
    per_entry = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight.to(logits), reduction="none"
    )
    return _reduce(_sum_classes(per_entry, ignore), reduction)


def focal(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore: torch.Tensor | None = None,
    reduction: str = "mean",
    gamma: float = 2.0,
    alpha: float = 0.25,
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.), summed over classes."""
    _check(logits, targets, ignore)
    t = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p = torch.sigmoid(logits)
    p_true = p * t + (1 - p) * (1 - t)
    weight = (alpha * t + (1 - alpha) * (1 - t)) * (1 - p_true) ** gamma
    return _reduce(_sum_classes(weight * ce, ignore), reduction)


LOSSES = {"lse-sign": lse_sign_loss, "bce": bce, "weighted-bce": weighted_bce, "focal": focal}


def _check(logits: torch.Tensor, targets: torch.Tensor, ignore: torch.Tensor | None) -> None:
    if logits.dim() != 2:
        raise ConfigError(f"logits must be [B, C], got shape {list(logits.shape)}")
    if targets.shape != logits.shape:
        raise ConfigError(f"targets shape {list(targets.shape)} does not match logits {list(logits.shape)}")
    if ignore is not None and (ignore.shape != logits.shape or ignore.dtype != torch.bool):
        raise ConfigError(f"ignore must be a bool tensor of shape {list(logits.shape)}")


def _sum_classes(per_entry: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    if ignore is not None:
        per_entry = per_entry.masked_fill(ignore, 0.0)
    return per_entry.sum(dim=1)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ConfigError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
