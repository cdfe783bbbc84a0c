"""The README is a front page that stays true: its headline table is the generated one, it fits on a page, and its
example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_the_decision_table_is_the_generated_one() -> None:
    block = re.search(r"<!-- decisions:begin[^>]*-->\n(.*?)<!-- decisions:end -->", README, re.S).group(1)
    assert block == (REPO / "paper" / "generated" / "decisions" / "decisions.md").read_text()


def test_the_front_page_is_short_and_points_at_what_exists() -> None:
    assert len(README.splitlines()) <= 150
    for path in re.findall(r"\]\(([^)#]+)\)", README) + ["scripts/setup.sh", "paper/paper.pdf", "docs/lab-notes.md"]:
        assert (REPO / path).exists(), path
    listed = set(re.search(r"Profiles live in\s+`attnlib/profiles/` \(([^)]*)\)", README).group(1).replace("`", "")
                 .replace("\n", " ").split(", "))
    assert listed == {p.stem for p in (REPO / "attnlib" / "profiles").glob("*.toml")}


@pytest.mark.slow
def test_the_use_example_runs_as_written(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything it wrote would land here, not in the checkout
    exec(re.search(r"## Use\n\n```python\n(.*?)```", README, re.S).group(1), {})
    assert list(tmp_path.iterdir()) == []
