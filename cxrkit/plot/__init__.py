"""Matplotlib figures for evaluation and explanations.

Every function draws on a matplotlib ``ax`` (a new figure when ``ax=None``)
and returns it, and works without a display (the Agg backend).
"""

from cxrkit.plot.evaluation import (
    plot_calibration,
    plot_class_distribution,
    plot_confusion_matrix,
    plot_history,
    plot_misclassified,
    plot_model_comparison,
    plot_precision_recall,
    plot_roc,
)
from cxrkit.plot.heatmaps import plot_explanations, plot_heatmap, plot_heatmap_grid

__all__ = [
    "plot_calibration",
    "plot_class_distribution",
    "plot_confusion_matrix",
    "plot_explanations",
    "plot_heatmap",
    "plot_heatmap_grid",
    "plot_history",
    "plot_misclassified",
    "plot_model_comparison",
    "plot_precision_recall",
    "plot_roc",
]
