"""Explanations of fitted classifiers, on Captum, and checks that they are right.

Heatmap methods share one calling convention, ``method(clf, X, target=None,
..., batch_size=32)``, and return ``(n, H, W)`` float arrays in [0, 1]:

* [`grad_cam`][cxrkit.explain.grad_cam] (the default choice: fast, per-architecture
  layer),
* [`guided_grad_cam`][cxrkit.explain.guided_grad_cam],
  [`occlusion`][cxrkit.explain.occlusion] (Kermany et al., 2018),
  [`integrated_gradients`][cxrkit.explain.integrated_gradients].

Checks: [`faithfulness_score`][cxrkit.explain.faithfulness_score] and
[`deletion_curve`][cxrkit.explain.deletion_curve] (does hiding
the top-ranked pixels change the prediction?) on any model and images, and
[`pointing_game`][cxrkit.explain.pointing_game] where lesion masks are known.

Heatmaps show what a model used, not where disease is. For research and
education; not a medical device.
"""

from cxrkit.explain._faithfulness import deletion_curve, faithfulness_score
from cxrkit.explain._grad_cam import grad_cam
from cxrkit.explain._guided_grad_cam import guided_grad_cam
from cxrkit.explain._integrated_gradients import integrated_gradients
from cxrkit.explain._occlusion import occlusion
from cxrkit.explain._pointing_game import pointing_game

__all__ = [
    "deletion_curve",
    "faithfulness_score",
    "grad_cam",
    "guided_grad_cam",
    "integrated_gradients",
    "occlusion",
    "pointing_game",
]
