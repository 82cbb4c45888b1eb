"""The documentation site: it builds, and no page shows what it should not.

The site is built once per session (``built_site`` in conftest.py, about
half a minute) with ``mkdocs build --strict``. The checks are on the built
HTML, where a mistake is what a reader sees: a snippet marker that did not
expand (``--8<--`` shown as text, or a mangled ``--8 < --``), a Sphinx role
printed literally (``:func:`x```), or an empty code block.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A snippet marker, whole or mangled by a Markdown formatter ("--8 < --").
SNIPPET_MARKER = re.compile(r"--8\s*(<|&lt;)\s*--")
# A Sphinx cross-reference role, as mkdocs prints it (role, then the name in
# backticks or, once rendered, in <code>).
SPHINX_ROLE = re.compile(r":(func|class|mod|meth|data|attr|obj|exc|ref):(`|<code>)")


class _CodeBlocks(HTMLParser):
    """The text of every ``<pre>`` element of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "pre":
            self._depth += 1
            if self._depth == 1:
                self.blocks.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.blocks[-1] += data


def code_blocks(html: str) -> list[str]:
    parser = _CodeBlocks()
    parser.feed(html)
    return parser.blocks


def page_problems(html: str) -> list[str]:
    """What is wrong with one built page (empty when nothing is)."""
    # The search index and the page's own <script> hold the page text too;
    # look at the visible text only.
    visible = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    problems = [
        f"raw snippet marker {m.group(0)!r}" for m in SNIPPET_MARKER.finditer(visible)
    ]
    problems += [
        f"Sphinx role {m.group(0)!r} shown literally"
        for m in SPHINX_ROLE.finditer(visible)
    ]
    problems += [
        f"empty code block #{i}"
        for i, block in enumerate(code_blocks(visible))
        if not block.strip()
    ]
    return problems


def test_page_problems_finds_what_a_reader_would_see() -> None:
    good = "<pre><code>import cxrkit</code></pre><p>See <code>grad_cam</code>.</p>"
    assert page_problems(good) == []
    assert page_problems('<pre><code>--8 &lt; --"examples/a.py:x"</code></pre>')
    assert page_problems("<pre><code>--8&lt;-- 'a.py'</code></pre>")
    assert page_problems("<p>Use :func:<code>grad_cam</code>.</p>")
    assert page_problems("<p>Use :class:`PneumoniaClassifier`.</p>")
    empty = '<div class="highlight"><pre><span></span><code>\n</code></pre></div>'
    assert page_problems(empty)


def test_markdown_sources_have_only_exact_snippet_markers() -> None:
    """A formatter that rewrites ``--8<--`` makes it plain text: catch it at
    the source too, with the file and line to fix."""
    bad = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for number, line in enumerate(page.read_text("utf-8").splitlines(), 1):
            if SNIPPET_MARKER.search(line) and not re.fullmatch(
                r'--8<-- "[^"\s]+"', line.strip()
            ):
                bad.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, 'snippet markers must read --8<-- "path:section":\n' + "\n".join(
        bad
    )


def test_docstrings_use_markdown_links_not_sphinx_roles() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "cxrkit").rglob("*.py"))
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if re.search(r":(func|class|mod|meth|data|attr|obj):`", line)
    ]
    assert not bad, (
        "use [`name`][cxrkit.module.name] or backticks instead of Sphinx roles: "
        + ", ".join(bad)
    )


def test_built_pages_show_code_and_no_raw_markup(built_site: Path) -> None:
    pages = sorted(built_site.rglob("*.html"))
    assert len(pages) > 20, f"only {len(pages)} pages were built"
    problems = {
        str(page.relative_to(built_site)): found
        for page in pages
        if (found := page_problems(page.read_text("utf-8")))
    }
    assert not problems, problems


@pytest.mark.parametrize("page", ["quickstart/index.html", "tutorial/index.html"])
def test_pages_of_newcomers_show_python_code(built_site: Path, page: str) -> None:
    html = (built_site / page).read_text("utf-8")
    blocks = [b for b in code_blocks(html) if "import" in b]
    assert len(blocks) >= 3, f"{page}: {len(blocks)} code blocks with imports"


#: What a user cannot decode or use: development paths, and phrases about
#: the project's own machines and process.
NOT_FOR_USERS = re.compile(
    r"shared/data|\.\./shared"
    r"|this project's|the project's own|was lent|when one was lent"
    r"|maintainers? measure|\bbudget\b|3x (?:target|goal)|target was not shown"
    r"|\bissue \d+|working session|earlier session|scratch scripts?"
    r"|\bthis release\b",
    re.I,
)


def user_text_problems(html: str) -> list[str]:
    """Phrases of ``NOT_FOR_USERS`` in a page's visible text."""
    visible = re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", visible)
    return sorted({m.group(0) for m in NOT_FOR_USERS.finditer(text)})


def test_user_text_problems_finds_what_a_user_cannot_decode():
    assert user_text_problems("<p>python x.py ../shared/data/chest_xray</p>")
    assert user_text_problems("<p>within the 30-minute budget</p>")
    assert user_text_problems("<p>the GPU was lent for these runs</p>")
    assert user_text_problems("<p>its maintainers measure each recipe there</p>")
    assert not user_text_problems("<p>cxrkit train chest_xray/train</p>")
    assert not user_text_problems("<script>var x = 'shared/data';</script>")


def test_no_page_has_development_paths_or_project_phrases(built_site: Path) -> None:
    problems = {
        str(page.relative_to(built_site)): found
        for page in sorted(built_site.rglob("*.html"))
        if (found := user_text_problems(page.read_text("utf-8")))
    }
    assert not problems, problems


def _first_screen(html: str) -> str:
    """A guide's opening: from its title to its first section heading."""
    article = html[html.index("<article") :]
    start = article.index("</h1>")
    end = article.find("<h2", start)
    return article[start : end if end > 0 else None]


@pytest.mark.parametrize("guide", ["recipe", "explain", "serve", "deploy"])
def test_guide_opens_with_the_command_and_what_to_expect(
    built_site: Path, guide: str
) -> None:
    """The first screen of a guide says what to run, what it costs, what to
    expect and what can go wrong, before any section."""
    opening = _first_screen((built_site / "guide" / guide / "index.html").read_text())
    commands = [b for b in code_blocks(opening) if "cxrkit " in b]
    assert commands, f"{guide}: no command before the first section"
    text = re.sub(r"<[^>]+>", "", opening)
    for heading in ("What it costs", "What to expect", "What can go wrong"):
        assert heading in text, f"{guide}: no '{heading}' before the first section"
    assert len(text.split()) < 450, f"{guide}: the opening is {len(text.split())} words"


def test_recipe_guide_gives_second_site_figures_and_says_they_chose(
    built_site: Path,
):
    html = (built_site / "guide" / "recipe" / "index.html").read_text()
    section = html.split('id="results-at-a-second-site"', 1)[1]
    section = section.split("<h2", 1)[0]
    assert "efficientnet_lite0_frozen" in section and "<table" in section
    assert "used for choices" in section  # not presented as an independent claim
    assert "not an independent claim" in section


def test_inline_code_breaks_only_at_its_spaces(built_site: Path) -> None:
    """Identifiers stay whole at a line end: every token of inline code is a
    nowrap span (tools/mkdocs_hooks.py), code blocks are untouched."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py"
    )
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    assert hooks.nobr_tokens("<code>old_recipe --synthetic</code>") == (
        '<code><span class="nobr">old_recipe</span> '
        '<span class="nobr">--synthetic</span></code>'
    )
    assert hooks.nobr_tokens("<pre><code>a b</code></pre>") == (
        "<pre><code>a b</code></pre>"
    )
    page = (built_site / "changelog" / "index.html").read_text()
    assert '<code><span class="nobr">--synthetic</span></code>' in page
    css = (built_site / "stylesheets" / "extra.css").read_text()
    assert re.search(r"code \.nobr\s*\{\s*white-space: nowrap", css)
