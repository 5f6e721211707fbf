"""The README stays a short front page, and the documentation it leads to has no broken links.

Every relative link in README.md and docs/ (subfolders too) must name a file or folder of the
repository, without an anchor: headings get renamed, files are what a link can rely on.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# [text](target) outside code; an image ![alt](target) is a link too.
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """The relative link targets of a page, fenced code blocks and inline code skipped."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_readme_is_a_front_page_of_at_most_200_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    first_screen = "\n".join(lines[:40])
    for command in ("make demo", "make run", "make test"):
        assert command in first_screen, f"{command} is not on the README's first screen"


def test_the_readme_links_every_page_of_docs():
    linked = {(ROOT / target).resolve() for target in relative_links(ROOT / "README.md")}
    unlinked = [p.relative_to(ROOT).as_posix() for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link: {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_names_an_existing_file_without_an_anchor(page):
    links = relative_links(page)
    anchored = [t for t in links if "#" in t]
    assert not anchored, f"{page.name}: link to a file, not a heading: {anchored}"
    broken = [t for t in links if not (page.parent / t).exists()]
    assert not broken, f"{page.name} links to what does not exist: {broken}"


def test_the_link_finder_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See [a](a.md), ![chart](img/c.png) and [web](https://x.example/).\n"
                    "`[not](code.md)`\n```\n[nor](fenced.md)\n```\n[b](sub/b.md#part)\n")
    assert relative_links(page) == ["a.md", "img/c.png", "sub/b.md#part"]
