"""Explanations of fitted classifiers, on Captum, and checks that they are right.

Heatmap methods share one calling convention, ``method(clf, X, target=None,
..., batch_size=32)``, and return ``(n, H, W)`` float arrays in [0, 1].
``explain(clf, X, method=...)`` calls any of them by name (``METHODS``); its
default, ``DEFAULT_METHOD``, is
[`adaptive_occlusion`][cxrkit.explain.adaptive_occlusion], chosen on
synthetic lesions and real radiographs (the docs' *Benchmarks:
explanations* page), and what the report, ``cxrkit explain`` and ``cxrkit
serve`` draw;
[`method_caption`][cxrkit.explain.method_caption] names a method with its
caveat:

* class activation maps: [`grad_cam`][cxrkit.explain.grad_cam] (exactly
  Grad-CAM), [`hires_cam`][cxrkit.explain.hires_cam],
  [`grad_cam_plus_plus`][cxrkit.explain.grad_cam_plus_plus],
  [`xgrad_cam`][cxrkit.explain.xgrad_cam],
  [`layer_cam`][cxrkit.explain.layer_cam] (one layer, or several feature
  grids fused);
* gradients at the pixels:
  [`input_x_gradient`][cxrkit.explain.input_x_gradient],
  [`guided_grad_cam`][cxrkit.explain.guided_grad_cam],
  [`integrated_gradients`][cxrkit.explain.integrated_gradients];
  perturbation: [`occlusion`][cxrkit.explain.occlusion] (Kermany et al.,
  2018) and [`adaptive_occlusion`][cxrkit.explain.adaptive_occlusion]
  (the same map, evaluated in full only around its peak).

Checks: [`faithfulness_score`][cxrkit.explain.faithfulness_score] and
[`deletion_curve`][cxrkit.explain.deletion_curve] (does hiding the
top-ranked pixels change the prediction?) on any model and images, and
[`pointing_game`][cxrkit.explain.pointing_game] where lesion masks are known;
[`evidence_outside_lungs`][cxrkit.explain.evidence_outside_lungs] (how much
of a model's heat lies outside the lung fields: a shortcut check, with
[`lung_field_prior`][cxrkit.explain.lung_field_prior] or the user's lung
masks) and [`heat_share`][cxrkit.explain.heat_share].

Heatmaps show what a model used, not where disease is. For research and
education; not a medical device.
"""

from cxrkit.explain._adaptive_occlusion import adaptive_occlusion
from cxrkit.explain._explain import DEFAULT_METHOD, METHODS, explain, method_caption
from cxrkit.explain._faithfulness import deletion_curve, faithfulness_score
from cxrkit.explain._grad_cam import grad_cam
from cxrkit.explain._grad_cam_plus_plus import grad_cam_plus_plus
from cxrkit.explain._guided_grad_cam import guided_grad_cam
from cxrkit.explain._hires_cam import hires_cam
from cxrkit.explain._input_x_gradient import input_x_gradient
from cxrkit.explain._integrated_gradients import integrated_gradients
from cxrkit.explain._layer_cam import layer_cam
from cxrkit.explain._lung_fields import (
    LungEvidence,
    evidence_outside_lungs,
    heat_share,
    lung_field_prior,
)
from cxrkit.explain._occlusion import occlusion
from cxrkit.explain._pointing_game import pointing_game
from cxrkit.explain._xgrad_cam import xgrad_cam

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "LungEvidence",
    "adaptive_occlusion",
    "deletion_curve",
    "evidence_outside_lungs",
    "explain",
    "faithfulness_score",
    "grad_cam",
    "grad_cam_plus_plus",
    "guided_grad_cam",
    "heat_share",
    "hires_cam",
    "input_x_gradient",
    "integrated_gradients",
    "layer_cam",
    "lung_field_prior",
    "method_caption",
    "occlusion",
    "pointing_game",
    "xgrad_cam",
]
