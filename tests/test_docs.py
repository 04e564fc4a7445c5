"""The README and docs/ pages: links between them resolve, every page is reachable from the
README, and the README stays a landing page (issue 27)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def pages() -> list[Path]:
    """README.md and every docs/*.md page."""
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks, so a `#` comment is no heading and code no link."""
    return FENCE.sub("", text)


def links(page: Path) -> list[str]:
    """Targets of Markdown links and images in `page`, outside code."""
    return LINK.findall(INLINE_CODE.sub("", prose(page.read_text())))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in `page`, with GitHub's -1, -2 ... for repeated ones."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def problems(page: Path) -> list[str]:
    """One line per relative link of `page` that points nowhere."""
    found = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http(s):, mailto: ... are not checked offline
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(REPO)}: ({target})"
        if not dest.exists():
            found.append(f"{where}: no file {path}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            found.append(f"{where}: no heading #{anchor} in {dest.relative_to(REPO)}")
    return found


def reachable() -> set[Path]:
    """The .md pages reached from the README by following links."""
    seen, todo = {README}, [README]
    while todo:
        page = todo.pop()
        for target in links(page):
            path = target.partition("#")[0]
            dest = (page.parent / path).resolve() if path else page
            if dest.suffix == ".md" and dest.is_file() and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    return seen


def test_every_relative_link_resolves():
    broken = [line for page in pages() for line in problems(page)]
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    unreached = [str(p.relative_to(REPO)) for p in pages() if p not in reachable()]
    assert not unreached, f"not linked from README.md (directly or through pages): {unreached}"


def test_readme_is_a_landing_page():
    text = README.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES})"
    assert "make repro" in text and "make test" in text
    assert "source .venv/bin/activate" in text


def test_a_broken_link_or_anchor_is_found(tmp_path, monkeypatch):
    """The checks above would fail: a missing file, a missing heading, a page nobody links."""
    tmp_path = tmp_path.resolve()
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    (tmp_path / "README.md").write_text("# Top\n\n[page](docs/page.md#a-heading) [x](#top)\n")
    page.write_text(
        "## A heading\n\n[gone](missing.md) ![img](fig.png) [bad](../README.md#nowhere)\n"
        "```bash\n# not a heading [not a link](nowhere.md)\n```\n"
    )
    (tmp_path / "docs" / "orphan.md").write_text("# Alone\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "README", tmp_path / "README.md")
    assert problems(tmp_path / "README.md") == []
    assert problems(page) == [
        "docs/page.md: (missing.md): no file missing.md",
        "docs/page.md: (fig.png): no file fig.png",
        "docs/page.md: (../README.md#nowhere): no heading #nowhere in README.md",
    ]
    assert reachable() == {tmp_path / "README.md", page}


def test_slugs_follow_github():
    assert slug("The result of `make repro` (embedded synthetic default)") == (
        "the-result-of-make-repro-embedded-synthetic-default"
    )
    assert slug("Training loop: full loop / pure compute (`x/y.py`)") == (
        "training-loop-full-loop--pure-compute-xypy"
    )
