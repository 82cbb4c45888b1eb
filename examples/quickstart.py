"""Quickstart: train, tune and evaluate a classifier on a folder of chest X-rays.

Usage::

    python examples/quickstart.py [DATA_DIR] [--n-patients N]

DATA_DIR is a Kermany-style folder (``train/`` and ``val/`` or ``test/``, each
with one subfolder per class). Without it, synthetic chest-like images are
used. ``--n-patients`` trains on the images of that many patients (a
patient-grouped subset) to keep it quick on a laptop CPU.
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold, GroupShuffleSplit

from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups
from cxrkit.datasets import make_synthetic_cxr

parser = argparse.ArgumentParser()
parser.add_argument("data", nargs="?", help="folder with train/ and val/ or test/")
parser.add_argument("--n-patients", type=int, default=200)
args = parser.parse_args()

if args.data:
    root = Path(args.data)
    # --8<-- [start:load]
    X, y = load_image_folder(root / "train")  # X: paths, y: "NORMAL"/"PNEUMONIA"
    groups = patient_groups(X)  # one id per patient: no patient in two folds
    # --8<-- [end:load]
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    X_test, y_test = load_image_folder(test_dir)
    if args.n_patients < len(set(groups)):  # a patient-grouped subset, for speed
        # an integer train_size counts groups (patients), not images
        split = GroupShuffleSplit(1, train_size=args.n_patients, random_state=0)
        keep, _ = next(split.split(X, y, groups))
        X, y, groups = X[keep], y[keep], groups[keep]
else:
    images, labels, _ = make_synthetic_cxr(2 * args.n_patients + 200, random_state=0)
    X, y, X_test, y_test = images[:-200], labels[:-200], images[-200:], labels[-200:]
    groups = np.arange(len(X))

# --8<-- [start:search]
clf = PneumoniaClassifier(
    model="cnn4", image_size=64, class_weight="balanced", max_epochs=4, random_state=0
)
search = GridSearchCV(clf, {"lr": [1e-3, 3e-3]}, scoring="roc_auc", cv=GroupKFold(3))
search.fit(X, y, groups=groups)
print("best parameters:", search.best_params_, f"CV ROC AUC {search.best_score_:.3f}")
# --8<-- [end:search]

# --8<-- [start:evaluate]
proba = search.predict_proba(X_test)[:, 1]  # columns follow classes_
print(f"test ROC AUC: {roc_auc_score(y_test == 'PNEUMONIA', proba):.3f}")
print(classification_report(y_test, search.predict(X_test)))
# --8<-- [end:evaluate]
