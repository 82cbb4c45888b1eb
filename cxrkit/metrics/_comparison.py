"""Several models on the same images, with paired differences."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.utils.validation import column_or_1d

from cxrkit.metrics._bootstrap import Estimate, estimate
from cxrkit.metrics._clinical_report import ClinicalReport, clinical_reports


def _plain(e: Estimate) -> dict[str, float | None]:
    return {k: float(v) if np.isfinite(v) else None for k, v in e._asdict().items()}


@dataclass
class ModelComparison:
    """Several models' reports on the same images, with paired differences.

    Made by [`from_predictions`][cxrkit.metrics.ModelComparison.from_predictions]
    or [`compare_models`][cxrkit.report.compare_models]. ``print()`` shows
    one table; the ROC curves are drawn by
    [`plot_model_comparison`][cxrkit.plot.plot_model_comparison]. All models
    are measured on one shared matrix of bootstrap resamples, so the
    difference in ROC AUC to the first model has a paired interval (a model
    compared with itself differs by exactly 0, whatever the seed).
    """

    y_true: np.ndarray
    proba: dict[str, np.ndarray]
    reports: dict[str, ClinicalReport]
    _replicates: dict[str, dict[Hashable, np.ndarray]] | None = field(
        default=None, repr=False
    )

    @classmethod
    def from_predictions(
        cls,
        y_true: Sequence | np.ndarray,
        probas: Mapping[str, Sequence | np.ndarray],
        **kwargs: Any,
    ) -> ModelComparison:
        """Compare precomputed probabilities of several models.

        Parameters
        ----------
        y_true : array-like of shape (n,)
        probas : mapping of name to array-like
            Each model's ``predict_proba`` output (or probability of the
            positive class) on the same images.
        **kwargs
            ``threshold``, ``pos_label``, ``classes``, ``n_bootstrap``,
            ``confidence``, ``random_state``, as in
            [`clinical_report`][cxrkit.metrics.clinical_report]; the same
            for every model.

        Returns
        -------
        ModelComparison

        Examples
        --------
        >>> y = ["NORMAL"] * 20 + ["PNEUMONIA"] * 20
        >>> p = np.linspace(0, 1, 40)
        >>> comparison = ModelComparison.from_predictions(
        ...     y, {"a": p, "b": p, "c": p**2}, n_bootstrap=200, random_state=None)
        >>> comparison.auc_differences()["b"]
        Estimate(value=0.0, low=0.0, high=0.0)
        """
        y_true = column_or_1d(np.asarray(y_true))
        if not probas:
            raise ValueError("no models to compare: pass {name: proba, ...}")
        reports, replicates = clinical_reports(y_true, probas, **kwargs)
        proba = {k: np.asarray(v) for k, v in probas.items()}
        return cls(y_true, proba, reports, replicates)

    def auc_differences(self) -> dict[str, Estimate]:
        """ROC AUC of each model minus that of the first, with paired CIs."""
        (first, _), *others = self.reports.items()
        self._checked_replicates([first], "roc_auc")  # no resamples: no pairs
        return {name: self.mean_difference([name], [first]) for name, _ in others}

    def _checked_replicates(self, names: Sequence[str], metric: str) -> np.ndarray:
        if self._replicates is None:
            raise ValueError(
                "this comparison holds reports that were not resampled together, "
                "so their differences have no paired interval; build it with "
                "ModelComparison.from_predictions or compare_models"
            )
        unknown = [n for n in names if n not in self.reports]
        if unknown:
            raise ValueError(
                f"no model named {unknown}; the comparison has {list(self.reports)}"
            )
        if metric not in self._replicates[names[0]]:
            raise ValueError(
                f"unknown metric {metric!r}; choose one of "
                f"{sorted(map(str, self._replicates[names[0]]))}"
            )
        return np.stack([self._replicates[n][metric] for n in names])

    def mean_metric(self, names: Sequence[str], metric: str = "roc_auc") -> Estimate:
        """A metric averaged over several models, e.g. the training seeds of
        one recipe, with its interval from the shared resamples.

        Parameters
        ----------
        names : sequence of str
            Models of this comparison.
        metric : str, default="roc_auc"
            A metric of the reports (``"roc_auc"``, ``"sensitivity"``, ...).

        Returns
        -------
        Estimate

        Examples
        --------
        >>> y = ["NORMAL"] * 20 + ["PNEUMONIA"] * 20
        >>> p = np.linspace(0, 1, 40)
        >>> comparison = ModelComparison.from_predictions(
        ...     y, {"s0": p, "s1": p}, n_bootstrap=200, random_state=0)
        >>> comparison.mean_metric(["s0", "s1"]).value
        1.0
        """
        names = list(names)
        if not names:
            raise ValueError("names is empty: pass the models to average")
        draws = self._checked_replicates(names, metric)
        first = self.reports[names[0]]
        value = np.mean([self.reports[n].metrics[metric].value for n in names])
        return estimate(value, draws.mean(axis=0), first.confidence)

    def mean_difference(
        self, names: Sequence[str], others: Sequence[str], metric: str = "roc_auc"
    ) -> Estimate:
        """Mean of ``metric(names[i]) - metric(others[i])`` over pairs, with a
        paired interval: e.g. two recipes, each trained with the same seeds.

        Every pair is measured on the same resamples, so the interval is of
        the difference itself, not of two separate estimates.

        Parameters
        ----------
        names, others : sequence of str
            Models of this comparison, paired by position (same length).
        metric : str, default="roc_auc"

        Returns
        -------
        Estimate

        Examples
        --------
        >>> y = ["NORMAL"] * 20 + ["PNEUMONIA"] * 20
        >>> p = np.linspace(0, 1, 40)
        >>> comparison = ModelComparison.from_predictions(
        ...     y, {"a0": p, "a1": p, "b0": p, "b1": p}, n_bootstrap=200)
        >>> comparison.mean_difference(["a0", "a1"], ["b0", "b1"])
        Estimate(value=0.0, low=0.0, high=0.0)
        """
        names, others = list(names), list(others)
        if not names or len(names) != len(others):
            raise ValueError(
                f"names and others must pair up: got {len(names)} and {len(others)}"
            )
        a = self._checked_replicates(names, metric)
        b = self._checked_replicates(others, metric)
        value = np.mean(
            [
                self.reports[x].metrics[metric].value
                - self.reports[z].metrics[metric].value
                for x, z in zip(names, others)
            ]
        )
        return estimate(value, (a - b).mean(axis=0), self.reports[names[0]].confidence)

    def to_dict(self) -> dict[str, Any]:
        """Per model: its report as a dict and the AUC difference to the first."""
        diffs = self.auc_differences()
        return {
            name: {
                "report": report.to_dict(),
                "roc_auc_minus_first": _plain(diffs[name]) if name in diffs else None,
            }
            for name, report in self.reports.items()
        }

    def __str__(self) -> str:
        keys = ("roc_auc", "sensitivity", "specificity", "ppv", "npv", "f1", "brier")
        heads = ("ROC AUC", "sensitivity", "specificity", "PPV", "NPV", "F1", "Brier")
        first = next(iter(self.reports))
        diffs = self.auc_differences()
        width = max(len(n) for n in self.reports) + 2
        lines = [
            f"{'model':<{width}}"
            + "".join(f"{h:>21}" for h in heads)
            + f"{'AUC - ' + first[:12]:>23}"
        ]
        for name, report in self.reports.items():
            cells = "".join(f"{report.metrics[k]!s:>21}" for k in keys)
            diff = f"{diffs[name]!s:>23}" if name in diffs else f"{'':>23}"
            lines.append(f"{name:<{width}}{cells}{diff}")
        report = self.reports[first]
        lines.append(
            f"{report.n} images; estimate (low-high): {report.ci_method}; paired: "
            "every model is measured on the same resamples"
        )
        return "\n".join(lines)
