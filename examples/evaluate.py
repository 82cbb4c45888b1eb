"""Evaluate a classifier honestly: intervals, a threshold chosen on validation
data, figures, a comparison of two models and the HTML report.

Usage::

    python examples/evaluate.py [DATA_DIR] [--n-patients N]

DATA_DIR is a Kermany-style folder with ``train/`` (one subfolder per class),
e.g. ``chest_xray``; without it, synthetic chest-like images
are used. The images of ``--n-patients`` patients (default 1000: about 1,800
images) are split by patient into training (60%), validation (20%) and test
(20%) parts.
The figures of the evaluation guide are written to ``--out`` (default
``out/evaluate/``; ``--out docs/images`` refreshes the guide's copies) and
the report to ``out/evaluation-report/``. About 5 to 10 minutes on 2 CPU
cores.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

# --8<-- [start:imports]
import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import (
    FixedThresholdClassifier,
    GroupShuffleSplit,
    TunedThresholdClassifierCV,
)

from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups, plot
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.metrics import clinical_report, select_threshold
from cxrkit.report import compare_models, evaluation_report

# --8<-- [end:imports]

parser = argparse.ArgumentParser()
parser.add_argument("data", nargs="?", help="folder with train/")
parser.add_argument("--n-patients", type=int, default=1000)
parser.add_argument("--out", default="out/evaluate", help="folder for the figures")
args = parser.parse_args()
images_dir = Path(args.out)
images_dir.mkdir(parents=True, exist_ok=True)

if args.data:
    X, y = load_image_folder(Path(args.data) / "train")
    groups = patient_groups(X)
else:
    X, y, _ = make_synthetic_cxr(args.n_patients, image_size=64, random_state=0)
    groups = np.arange(len(X))
if args.n_patients < len(np.unique(groups)):
    keep, _ = next(  # an int train_size counts groups: patients
        GroupShuffleSplit(1, train_size=args.n_patients, random_state=0).split(
            X, y, groups
        )
    )
    X, y, groups = X[keep], y[keep], groups[keep]


def split(idx: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Patient-grouped split of the indices ``idx``."""
    a, b = next(
        GroupShuffleSplit(1, test_size=size, random_state=0).split(
            idx, groups=groups[idx]
        )
    )
    return idx[a], idx[b]


rest, test = split(np.arange(len(X)), 0.2)
train, valid = split(rest, 0.25)
X_train, y_train = X[train], y[train]
X_valid, y_valid = X[valid], y[valid]
X_test, y_test = X[test], y[test]

clf = PneumoniaClassifier(
    model="cnn4", image_size=64, class_weight="balanced", max_epochs=4, random_state=0
).fit(X_train, y_train)

# --8<-- [start:report]
# 1. Choose the operating threshold on validation data ...
proba_valid = clf.predict_proba(X_valid)
point = select_threshold(y_valid, proba_valid, sensitivity=0.95)
print(point)

# 2. ... and report on separate test data, with 95% intervals.
proba_test = clf.predict_proba(X_test)
report = clinical_report(
    y_test, proba_test, threshold=point.threshold, classes=clf.classes_
)
print(report)
sensitivity = report.metrics["sensitivity"]  # Estimate(value, low, high)
# --8<-- [end:report]

# --8<-- [start:sklearn]
# A fitted classifier with a fixed threshold; FrozenEstimator keeps `fit`
# from training it again.
screening = FixedThresholdClassifier(
    FrozenEstimator(clf), threshold=point.threshold, pos_label="PNEUMONIA"
).fit(X_valid, y_valid)
y_pred = screening.predict(X_test)

# Or let scikit-learn search the threshold that maximizes a score on the
# validation data (balanced accuracy: the same optimum as Youden's J).
tuned = TunedThresholdClassifierCV(
    clf, scoring="balanced_accuracy", cv="prefit", refit=False
).fit(X_valid, y_valid)
print(f"tuned threshold: {tuned.best_threshold_:.3f}")
# --8<-- [end:sklearn]

# --8<-- [start:plots]
# Curves from the report: its intervals in the legends, its threshold marked.
fig, axes = plt.subplots(2, 2, figsize=(11, 10), layout="constrained")
plot.plot_confusion_matrix(report=report, ax=axes[0, 0])
plot.plot_roc(report=report, ax=axes[0, 1])
plot.plot_precision_recall(report=report, ax=axes[1, 0])
plot.plot_calibration(report=report, ax=axes[1, 1])
fig.savefig(images_dir / "evaluation_curves.png", dpi=80)

fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
plot.plot_history(clf, ax=axes[0])
plot.plot_class_distribution(
    {"train": y_train, "validation": y_valid, "test": y_test}, ax=axes[1]
)
fig.savefig(images_dir / "evaluation_history.png", dpi=80)
# --8<-- [end:plots]

# --8<-- [start:compare]
small = PneumoniaClassifier(
    model="simple_cnn",
    image_size=64,
    class_weight="balanced",
    max_epochs=4,
    random_state=0,
).fit(X_train, y_train)
comparison = compare_models({"cnn4": clf, "simple_cnn": small}, X_test, y_test)
print(comparison)  # one table; AUC difference with a paired interval
ax = plot.plot_model_comparison(comparison)
ax.figure.savefig(images_dir / "evaluation_comparison.png", dpi=80)
# --8<-- [end:compare]

# --8<-- [start:html]
evaluation_report(
    clf, X_test, y_test, "out/evaluation-report", threshold=point.threshold
)
# out/evaluation-report/report.html: open it in a browser
# --8<-- [end:html]
print("figures in", images_dir, "; report in out/evaluation-report/report.html")
