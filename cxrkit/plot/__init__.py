"""Matplotlib figures for evaluation and explanations.

Single plots draw on a matplotlib ``ax`` (a new figure when ``ax=None``) and
return it; image grids (``plot_heatmap_grid``, ``plot_explanations``) take and
return a ``Figure``. All work without a display (the Agg backend).
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
