"""Matplotlib figures for evaluation and explanations.

Single plots draw on a matplotlib ``ax`` and return it; image grids
(``plot_heatmap_grid``, ``plot_explanations``) take and return a ``Figure``.

Figure policy: without ``ax`` (or ``fig``), a plot makes a new
``matplotlib.figure.Figure`` without pyplot, so no figure is left open in
pyplot's global state, and plots are safe in libraries, servers, loops and
threads (the Agg backend; no display needed). Save it with
``ax.figure.savefig(path)``; in a notebook, show it with ``ax.figure``. To
draw into a pyplot window, pass ``ax`` from ``plt.subplots()``.

The evaluation curves take a [`ClinicalReport`][cxrkit.metrics.ClinicalReport]
(``report=``) or predictions, and never run a bootstrap of their own.
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
from cxrkit.plot.heatmaps import (
    heatmap_overlay,
    method_title,
    plot_explanations,
    plot_heatmap,
    plot_heatmap_grid,
)

__all__ = [
    "heatmap_overlay",
    "method_title",
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
