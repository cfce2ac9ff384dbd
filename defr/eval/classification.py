"""HICO classification metrics: per-class 11-point AP, mAP, Few@1/5/10 and the known-object mAP.

Labels are HICO's raw values: 1 positive, -1 negative, 0 ambiguous, NaN not annotated. Per class, AP ranks
the images whose label is not 0 by score; NaN counts as negative. Classes without a positive among those
images have no AP (None): they are left out of every mean and counted in ``num_classes_evaluated``.
Known-object: class c is ranked only over images where some class with c's object is labelled 1 or -1
(the object is known to be there or not), ambiguous labels of c still excluded.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from defr import vocab
from defr.errors import ConfigError
from defr.eval.ap import average_precision_11, mean_ap


def hico_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    class_objects: list[int] | np.ndarray | None = None,
    few_shot: dict[int, list[int]] | None = None,
) -> dict:
    """Metrics of ``scores`` [N, C] (any monotone score: logits do) against raw ``labels`` [N, C].

    class_objects: [C] object index of each class (< 0: unknown, the class is its own group), or None
    (``ko_mAP`` None). few_shot: {1: [class ids], 5: [...], 10: [...]}; ``few@k`` is None when its list is
    missing or none of its classes has positives. Returns fractions in [0, 1] or None: ``mAP``, ``few@1``,
    ``few@5``, ``few@10``, ``ko_mAP``, plus ``per_class_ap`` ([C], None where not evaluated) and
    ``num_classes_evaluated``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ConfigError(f"scores and labels must both be [images, classes], got {scores.shape} and {labels.shape}")
    if not np.isfinite(scores).all():
        raise ConfigError("scores contain NaN or inf")
    unexpected = ~(np.isnan(labels) | np.isin(labels, (1.0, 0.0, -1.0)))
    if unexpected.any():
        raise ConfigError(f"labels must be 1, 0, -1 or NaN; found {np.unique(labels[unexpected])[:5].tolist()}")
    evaluated = labels != 0  # NaN != 0, so unannotated entries are ranked, as negatives
    per_class = image_class_aps(scores, labels == 1, evaluated)
    few_shot = few_shot or {}
    metrics = {"mAP": mean_ap(per_class, range(labels.shape[1]))}
    metrics.update({f"few@{k}": mean_ap(per_class, few_shot.get(k, [])) for k in vocab.FEW_SHOT_SIZES})
    if class_objects is None:
        metrics["ko_mAP"] = None
    else:
        known = evaluated & known_object_images(labels, class_objects)
        metrics["ko_mAP"] = mean_ap(image_class_aps(scores, labels == 1, known), range(labels.shape[1]))
    metrics["per_class_ap"] = per_class
    metrics["num_classes_evaluated"] = sum(ap is not None for ap in per_class)
    return metrics


def image_class_aps(scores: np.ndarray, positive: np.ndarray, evaluated: np.ndarray) -> list[float | None]:
    """[C] AP of each class over its ``evaluated`` images; None without positives there. All inputs [N, C]."""
    aps = []
    for c in range(scores.shape[1]):
        keep = evaluated[:, c]
        num_positives = int(positive[keep, c].sum())
        aps.append(average_precision_11(scores[keep, c], positive[keep, c], num_positives) if num_positives else None)
    return aps


def known_object_images(labels: np.ndarray, class_objects: list[int] | np.ndarray) -> np.ndarray:
    """[N, C] bool: some class sharing class c's object is labelled 1 or -1 in the image. labels: [N, C]."""
    class_objects = np.asarray(class_objects, dtype=np.int64)
    if class_objects.shape != (labels.shape[1],):
        raise ConfigError(
            f"class_objects must list one object per class ({labels.shape[1]}), got {class_objects.shape}"
        )
    # a class whose object is unknown (< 0) is a group of its own
    own = class_objects.max(initial=0) + 1 + np.arange(len(class_objects))
    _, group = np.unique(np.where(class_objects >= 0, class_objects, own), return_inverse=True)
    decided = (np.abs(labels) == 1).astype(np.float64)  # NaN → False
    members = np.zeros((len(group), group.max() + 1))
    members[np.arange(len(group)), group] = 1.0
    return (decided @ members > 0)[:, group]


# --------------------------------------------------------------------------- model evaluation


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> np.ndarray:
    """[N, C_model] float32 logits of every image of ``dataset``, in order.

    The model runs on ``device`` (default: where it is; it is moved there) in eval mode; its mode is restored.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        logits = [model(images.to(device)).float().cpu() for images, _ in tqdm(loader, desc="evaluate", leave=False)]
    finally:
        model.train(was_training)
    return torch.cat(logits).numpy()


def dataset_columns(model_classes: list[str], dataset_classes: list[str]) -> list[int]:
    """Model output column of each dataset class, matched by name (a 600-class model on a subset works)."""
    column = {name: i for i, name in enumerate(model_classes)}
    missing = [name for name in dataset_classes if name not in column]
    if missing:
        raise ConfigError(f"the model has no output for {len(missing)} dataset class(es): {missing[:5]}")
    return [column[name] for name in dataset_classes]


def evaluate_model(
    model: torch.nn.Module,
    dataset,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> dict:
    """``hico_metrics`` of a DEFR model on a ``defr.data.HOIDataset`` (logits: AP only depends on the ranking)."""
    logits = predict_logits(model, dataset, batch_size, device, num_workers)
    scores = logits[:, dataset_columns(model.cfg.class_names, dataset.class_names)]
    return hico_metrics(scores, dataset.labels, dataset.class_objects, dataset.few_shot)


def zero_shot_setup(
    backbone: str,
    pretrained: str,
    text_encoder: str,
    dataset_name: str,
    data_root,
    split: str,
    image_size: int | None = None,
):
    """(model, dataset) for zero-shot scoring: language-aligned ``pretrained`` weights whose classifier is the
    dataset's class sentences through their projection, untrained (``zero_shot_model``), and the split at
    the model's input size and normalisation."""
    from defr.data import build_dataset
    from defr.model.factory import zero_shot_model

    names = build_dataset(dataset_name, data_root, split, 16, (0.5,) * 3, (0.5,) * 3).class_names
    model = zero_shot_model(backbone, pretrained, text_encoder, names, image_size)
    spec = model.cfg.backbone
    return model, build_dataset(dataset_name, data_root, split, spec.image_size, spec.mean, spec.std)
