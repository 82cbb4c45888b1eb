"""HTML templates of cxrkit's reports, rendered with Jinja2.

The markup lives in the ``.html`` files beside this module (package data),
apart from the code that computes what they show: ``metrics_table.html``
(a `ClinicalReport` as a table, also its Jupyter view) and ``report.html``
(the page ``evaluation_report`` writes). Jinja2 escapes every value, so
class names and file paths cannot break the page. This module imports
nothing from cxrkit: metrics and report both render through it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["render"]


@cache
def _environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("cxrkit", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a missing value is an error, not blank
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` (a file in this package) with ``context``.

    Examples
    --------
    >>> from cxrkit.metrics import clinical_report
    >>> report = clinical_report([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], n_bootstrap=0)
    >>> render("metrics_table.html", report=report, rows=[], per_class_heads=[],
    ...        per_class_keys=[], fmt=str).startswith("<table")
    True
    """
    return _environment().get_template(name).render(**context)
