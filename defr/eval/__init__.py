"""Evaluation: HICO classification (mAP, Few@k, known-object) and HICO-DET detection (official protocol).

The HICO-DET annotations the evaluator scores against are read by ``defr.data.hicodet``."""

from defr.eval.ap import average_precision_11, voc_ap_11
from defr.eval.classification import evaluate_model, hico_metrics
from defr.eval.hicodet import ResultsError, evaluate_hicodet, load_results

__all__ = [
    "ResultsError",
    "average_precision_11",
    "evaluate_hicodet",
    "evaluate_model",
    "hico_metrics",
    "load_results",
    "voc_ap_11",
]
