"""Every citation of a markdown file points inside the repository: no tracked text file names a
`*.md` file that is not tracked here (as the two notes on the method and the design once were),
and a cited `#anchor` is a heading of its target.

A mention is a file name ending in .md, with a folder or not, maybe followed by #anchor. As the
target of a markdown link in a markdown file it resolves, as GitHub does, from the citing file's
folder; anywhere else from the repository root, from the citing file's folder or, without a
folder, by file name. A section citation (an upper-case NAME, a space, §N) needs a tracked
markdown file of that NAME. The names of the markdown files the package writes (`report.md`,
`demo.md`) are output, not citations.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from sparsefw.experiments.demo import DEMO_MD
from sparsefw.experiments.report import REPORT_MD

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_NAMES = {DEMO_MD, REPORT_MD}
MENTION = re.compile(r"(?P<link>\]\()?(?<![\w/.-])(?P<path>(?:[\w.-]+/)*[\w.-]+\.md)(?:#(?P<anchor>[\w-]+))?(?!\w)")
SECTION = re.compile(r"\b(?P<name>[A-Z][A-Z_]*[A-Z])\s+§")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc}): no list of tracked files")
    return [name for name in out.decode().split("\0") if name]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of the headings of `markdown`, outside fenced code blocks."""
    found, fenced = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            found.add(slug(m.group(1)))
    return found


def normalise(path: PurePosixPath) -> str | None:
    """`path` with `.` and `..` folded, relative to the root; None if it leaves the repository."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def dangling(name: str, text: str, markdown: dict[str, str]) -> list[str]:
    """'name:line: ...' for every mention in `text` (the content of tracked file `name`) of a
    markdown file or anchor that `markdown` ({tracked path: its text}) does not hold."""
    folder = PurePosixPath(name).parent
    by_name: dict[str, list[str]] = {}
    for path in markdown:
        by_name.setdefault(PurePosixPath(path).name, []).append(path)
    problems = []
    for m in MENTION.finditer(text):
        cited, anchor = m.group("path"), m.group("anchor")
        if cited in OUTPUT_NAMES:
            continue
        candidates = [normalise(folder / cited)]
        link = bool(m.group("link")) and name.endswith(".md")
        if not link:
            candidates.append(normalise(PurePosixPath(cited)))
            if "/" not in cited:
                candidates += by_name.get(cited, [])
        targets = [c for c in candidates if c in markdown]
        line = text.count("\n", 0, m.start()) + 1
        if not targets:
            how = "the link resolves from its folder" if link else "it resolves from the root, its folder or by name"
            problems.append(f"{name}:{line}: {cited} is not in the repository ({how})")
        elif anchor and not any(anchor in anchors(markdown[t]) for t in targets):
            problems.append(f"{name}:{line}: {cited} has no heading #{anchor}")
    for m in SECTION.finditer(text):
        if f"{m.group('name')}.md" not in by_name:
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{name}:{line}: {m.group('name')} {text[m.end() - 1:m.end() + 1]} cites "
                            f"{m.group('name')}.md, which is not in the repository")
    return problems


def test_every_cited_markdown_file_and_anchor_is_in_the_repository():
    texts = {name: text for name in tracked_files()
             if (ROOT / name).is_file() and (text := read_text(ROOT / name)) is not None}
    markdown = {name: text for name, text in texts.items() if name.endswith(".md")}
    problems = [p for name, text in sorted(texts.items()) for p in dangling(name, text, markdown)]
    assert not problems, "citations outside the repository:\n" + "\n".join(problems)


#: a markdown file that is not in the repository; it and the absent anchors below are spelled in two
#: pieces so that this file does not cite them
ABSENT = "REFERENCE"
MISSING = ABSENT + ".md"
MARKDOWN = {"README.md": "# sparsefw\n", "docs/method.md": "# The method\n## The SFW step\n```\n# not a heading\n```\n",
            "docs/tuning.md": "# Tuning\n"}


@pytest.mark.parametrize("name, text, expected", [
    ("src/sparsefw/radii.py", "width · E‖θ‖ (docs/method.md#the-sfw-step)", []),
    ("docs/tuning.md", "see [the method](method.md#the-sfw-step) and ../README.md, tuning.md", []),
    ("src/sparsefw/experiments/report.py", 'REPORT_MD = "report.md"; https://github.com/x/y/blob/main/NOTES.md', []),
    ("src/sparsefw/radii.py", f"width · E‖θ‖ ({MISSING} §1)",
     [f"src/sparsefw/radii.py:1: {MISSING} is not in the repository (it resolves from the root, its folder "
      "or by name)"]),
    ("benchmarks/bench_quality.py", '"([docs/method.md](docs/method.md#the-sfw-step))"', []),  # text for BENCHMARKS.md
    ("README.md", "\n[method](method.md)", ["README.md:2: method.md is not in the repository (the link resolves "
                                            "from its folder)"]),
    ("docs/tuning.md", f"README §1 (issue 17 §6), in {ABSENT}\n  §4's setting",
     [f"docs/tuning.md:1: {ABSENT} §4 cites {MISSING}, which is not in the repository"]),
    ("tests/test_layers.py", "docs/method.md#" "no-such-section and docs/method.md#" "not-a-heading",
     ["tests/test_layers.py:1: docs/method.md has no heading #no-such-section",
      "tests/test_layers.py:1: docs/method.md has no heading #not-a-heading"]),
])
def test_dangling_names_what_points_outside(name, text, expected):
    assert dangling(name, text, MARKDOWN) == expected


def test_anchors_follow_github():
    assert anchors("## The paper's setups (issue 19)\n### `norm_radius` — BN γ/β\n") == {
        "the-papers-setups-issue-19", "norm_radius--bn-γβ"}
