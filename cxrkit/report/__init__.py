"""Evaluation report: metrics, figures and one self-contained HTML page;
comparison of several models on the same images; predictions as CSV.

Modules: ``_predictions`` (batched ``predict_proba`` and out-of-distribution
scores, the CSV writer),
``_provenance`` (what the report was computed on), ``_figures`` (the
report's figures), ``_evaluation`` (``evaluation_report`` and
``compare_models``). The page's markup is the template
``cxrkit/templates/report.html``.

For research and education; not a medical device.
"""

from cxrkit.metrics import ModelComparison
from cxrkit.report._evaluation import DISCLAIMER, compare_models, evaluation_report
from cxrkit.report._predictions import (
    ood_columns,
    ood_scores,
    predict_proba,
    predictions,
    write_predictions,
)

__all__ = [
    "DISCLAIMER",
    "ModelComparison",
    "compare_models",
    "evaluation_report",
    "ood_columns",
    "ood_scores",
    "predict_proba",
    "predictions",
    "write_predictions",
]
