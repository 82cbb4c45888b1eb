"""How the classes of a training folder differ in acquisition traits; one JSON line.

    python benchmarks/experiments/traits.py --train ../shared/data/chest_xray/train \
        [--fullres ../shared/data/chest_xray_fullres]

For each trait of ``cxrkit.validation.acquisition_traits`` (measured on the
images decoded at 224 px): the median per class, Cohen's d (PNEUMONIA minus
NORMAL, in pooled standard deviations) and the ROC AUC of the trait alone for
PNEUMONIA (0.5: no information; far from 0.5 either way: a shortcut). Then
the patient-grouped 5-fold cross-validated AUC of a logistic regression on
all traits together: how well the class can be told from acquisition alone,
without looking at the lungs. With ``--fullres``, the original width, height
and aspect ratio of the full-resolution originals per class.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrkit import load_image_folder, load_images, patient_groups
from cxrkit.validation import TRAIT_IMAGE_SIZE, TRAITS, acquisition_traits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--fullres")
    args = parser.parse_args(argv)

    X, y = load_image_folder(args.train)
    images, _ = load_images(X, TRAIT_IMAGE_SIZE)
    traits = acquisition_traits(images)
    is_pos = y == "PNEUMONIA"
    result: dict = {
        "n": {"NORMAL": int((~is_pos).sum()), "PNEUMONIA": int(is_pos.sum())}
    }
    table = {}
    for name, col in zip(TRAITS, traits.T):
        neg, pos = col[~is_pos], col[is_pos]
        pooled = np.sqrt((neg.var() + pos.var()) / 2)
        table[name] = {
            "median_normal": round(float(np.median(neg)), 4),
            "median_pneumonia": round(float(np.median(pos)), 4),
            "cohen_d": round(float((pos.mean() - neg.mean()) / pooled), 2)
            if pooled
            else 0.0,
            "auc": round(float(roc_auc_score(is_pos, col)), 3),
        }
    result["traits"] = table
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    score = cross_val_predict(
        model, traits, is_pos, groups=patient_groups(X), cv=cv, method="predict_proba"
    )[:, 1]
    result["trait_only_auc_grouped_cv"] = round(float(roc_auc_score(is_pos, score)), 3)

    if args.fullres:
        Xf, yf = load_image_folder(args.fullres)
        sizes = np.array([Image.open(p).size for p in Xf], dtype=float)
        pos = yf == "PNEUMONIA"
        aspect = sizes[:, 0] / sizes[:, 1]
        result["fullres"] = {
            label: {
                "n": int(m.sum()),
                "median_width": float(np.median(sizes[m, 0])),
                "median_height": float(np.median(sizes[m, 1])),
                "median_aspect": round(float(np.median(aspect[m])), 3),
            }
            for label, m in (("NORMAL", ~pos), ("PNEUMONIA", pos))
        }
        result["fullres"]["auc_width"] = round(
            float(roc_auc_score(pos, sizes[:, 0])), 3
        )
        result["fullres"]["auc_aspect"] = round(float(roc_auc_score(pos, aspect)), 3)
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
