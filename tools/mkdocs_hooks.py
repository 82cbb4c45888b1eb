"""mkdocs hooks for the documentation site (``hooks:`` in mkdocs.yml).

Inline code keeps its identifiers whole: a browser may otherwise break
``old_recipe`` or ``--synthetic`` anywhere at a line end. Each space-free
token of an inline ``<code>`` becomes a ``<span class="nobr">``
(``white-space: nowrap`` in extra.css), so a command wraps at its spaces
only. A token too long for a table cell (a test's node id) may break after
``::``, ``/``, ``.`` or ``_`` instead (``<wbr>``). Code blocks (``<pre>``)
are left alone; what is copied is the same text.
"""

from __future__ import annotations

import re

# inline code: a <code> holding plain text only (code blocks hold <span>s
# of the highlighter, and their <code> follows <pre>)
_INLINE_CODE = re.compile(r"(?<!<pre>)<code>([^<]+)</code>")
_TOKEN = re.compile(r"\S+")
#: longer tokens break at their own separators rather than overflow
_LONG = 32
_SEPARATOR = re.compile(r"(::|/|\.|_)(?=\w)")


def _token(match: re.Match) -> str:
    token = match.group(0)
    if len(token) > _LONG:
        return _SEPARATOR.sub(r"\1<wbr>", token)
    return f'<span class="nobr">{token}</span>'


def nobr_tokens(html: str) -> str:
    """``html`` with every token of inline code wrapped in a nowrap span.

    >>> nobr_tokens("<code>train --force</code>")
    '<code><span class="nobr">train</span> <span class="nobr">--force</span></code>'
    >>> nobr_tokens("<code>test_io.py::test_a_rather_long_test_name</code>")
    '<code>test_<wbr>io.<wbr>py::<wbr>test_<wbr>a_<wbr>rather_<wbr>long_<wbr>test_<wbr>name</code>'
    >>> nobr_tokens('<pre><code>x = 1</code></pre>')
    '<pre><code>x = 1</code></pre>'
    """

    def wrap(match: re.Match) -> str:
        inner = _TOKEN.sub(_token, match.group(1))
        return f"<code>{inner}</code>"

    return _INLINE_CODE.sub(wrap, html)


def on_page_content(html: str, **kwargs) -> str:
    return nobr_tokens(html)
