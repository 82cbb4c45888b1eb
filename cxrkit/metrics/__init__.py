"""Clinical metrics with bootstrap confidence intervals, and operating thresholds.

* [`clinical_report`][cxrkit.metrics.clinical_report]: accuracy,
  sensitivity, specificity, PPV, NPV, F1, ROC/PR AUC and Brier score, each
  with a stratified bootstrap interval;
  [`ModelComparison`][cxrkit.metrics.ModelComparison] for several models on
  the same images, with paired differences.
* [`apply_threshold`][cxrkit.metrics.apply_threshold] and
  [`positive_label`][cxrkit.metrics.positive_label]: the one decision rule
  and positive-class policy of cxrkit (scikit-learn's conventions);
  [`select_threshold`][cxrkit.metrics.select_threshold] chooses an operating
  threshold for a target sensitivity or specificity.

Modules, in the order data flows: ``_inputs`` (checks, positive class),
``_bootstrap`` (the engine: a statistic on rows of resample weights; the
point estimate is the row of unit weights), ``_weighted`` (each metric,
once, as a weighted sum), ``_thresholds`` (decision rule, threshold
selection), ``_clinical_report`` (the report), ``_comparison`` (paired
comparison).

For research and education; not a medical device.
"""

from cxrkit.metrics._bootstrap import Estimate
from cxrkit.metrics._clinical_report import ClinicalReport, clinical_report
from cxrkit.metrics._comparison import ModelComparison
from cxrkit.metrics._inputs import positive_label
from cxrkit.metrics._thresholds import OperatingPoint, apply_threshold, select_threshold

__all__ = [
    "ClinicalReport",
    "Estimate",
    "ModelComparison",
    "OperatingPoint",
    "apply_threshold",
    "clinical_report",
    "positive_label",
    "select_threshold",
]
