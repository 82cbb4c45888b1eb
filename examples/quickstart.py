"""Quickstart: tune and evaluate a classifier on real chest X-rays.

Usage::

    python examples/quickstart.py [DATA_DIR] [--n-patients N]

Without DATA_DIR: the 600 real chest X-rays shipped with cxrkit
(``cxrkit.datasets.load_sample_cxr``; nothing to download). DATA_DIR is a
Kermany-style folder with ``train/`` (one subfolder per class, e.g. the
full dataset: the tutorial says where to download it). The images of
``--n-patients`` patients (default: all) are split by patient into a part
to tune on, a part to choose the threshold on and a part to report on.
"""

# --8<-- [start:settings]
DATA = None  # None: the sample shipped with cxrkit; or a folder: "chest_xray"
N_PATIENTS = None  # None: every patient; fewer for a quicker first run
# --8<-- [end:settings]

if __name__ == "__main__":  # not in the Quickstart: command-line options
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default=DATA)
    parser.add_argument("--n-patients", type=int, default=N_PATIENTS)
    args = parser.parse_args()
    DATA, N_PATIENTS = args.data, args.n_patients

# --8<-- [start:load]
from sklearn.model_selection import GroupShuffleSplit

from cxrkit import load_image_folder, patient_groups
from cxrkit.datasets import load_sample_cxr

if DATA is None:  # 300 NORMAL + 300 PNEUMONIA, 128 px, one image per patient
    X, y = load_sample_cxr(return_X_y=True)  # X: paths, y: class names
else:  # a class-per-subfolder folder, e.g. the full Kermany download
    X, y = load_image_folder(f"{DATA}/train")
groups = patient_groups(X)  # one id per patient: no patient in two folds
if N_PATIENTS is not None:  # an integer train_size counts groups: patients
    subset = GroupShuffleSplit(
        n_splits=1,
        train_size=N_PATIENTS,
        random_state=0,
    )
    keep, _ = next(subset.split(X, y, groups))
    X, y, groups = X[keep], y[keep], groups[keep]
print(f"{len(X)} images of {len(set(groups))} patients")
# --8<-- [end:load]

# --8<-- [start:search]
from sklearn.model_selection import GridSearchCV, GroupKFold, GroupShuffleSplit

from cxrkit import PneumoniaClassifier

# 70% of the patients to tune on; the rest is held out
split = GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0)
tune, held_out = next(split.split(X, y, groups))
clf = PneumoniaClassifier(
    model="cnn4",
    image_size=64,
    class_weight="balanced",
    max_epochs=4,
    random_state=0,
)
search = GridSearchCV(
    clf, {"lr": [1e-3, 3e-3]}, scoring="roc_auc", cv=GroupKFold(3), verbose=2
)
search.fit(X[tune], y[tune], groups=groups[tune])  # prints a line per fit
print("best parameters:", search.best_params_)
print(f"cross-validated ROC AUC: {search.best_score_:.3f}")
# --8<-- [end:search]

# --8<-- [start:evaluate]
from sklearn.model_selection import GroupShuffleSplit

from cxrkit.metrics import clinical_report, select_threshold

# the held-out patients: half choose the threshold, half are reported on
split = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=0)
valid, test = next(split.split(X[held_out], y[held_out], groups[held_out]))
valid, test = held_out[valid], held_out[test]
proba_valid = search.predict_proba(X[valid])
point = select_threshold(y[valid], proba_valid, sensitivity=0.9)
print(point)
proba = search.predict_proba(X[test])  # columns follow search.classes_
report = clinical_report(
    y[test], proba, threshold=point.threshold, classes=search.classes_
)
print(report)  # sensitivity, specificity, PPV, NPV, AUC with 95% intervals
# --8<-- [end:evaluate]
