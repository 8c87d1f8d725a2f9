"""SECURITY.md maps every threat to tests: each test it names exists, so the map cannot
drift from the suite unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)*)`")
NAME = re.compile(r"`(test_\w+)`")


@pytest.mark.sqlite
class TestSecurityDoc:
    def test_every_named_test_file_class_and_test_exists(self) -> None:
        document = (ROOT / "SECURITY.md").read_text()
        references = REFERENCE.findall(document)
        assert len(references) >= 30
        missing = []
        for path, names in references:
            source = ROOT / path
            if not source.is_file():
                missing.append(path)
                continue
            text = source.read_text()
            for name in names.split("::")[1:]:
                if not re.search(rf"\b(class|def) {name}\b", text):
                    missing.append(f"{path}::{name}")
        assert missing == []

    def test_bare_test_names_exist_somewhere_in_the_suite(self) -> None:
        document = (ROOT / "SECURITY.md").read_text()
        suite = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
        names = set(NAME.findall(document))
        assert names
        assert sorted(n for n in names if f"def {n}(" not in suite) == []

    def test_every_threat_of_the_issue_has_a_section_with_tests(self) -> None:
        document = (ROOT / "SECURITY.md").read_text()
        sections = re.split(r"^### ", document, flags=re.MULTILINE)[1:]
        titles = [s.splitlines()[0].lower() for s in sections]
        for threat in (
            "forged",
            "replayed",
            "open redirect",
            "token confusion",
            "secrets in logs",
            "sql injection",
            "cors",
            "csrf",
            "denial of service",
        ):
            (section,) = [s for s, t in zip(sections, titles, strict=True) if threat in t]
            assert REFERENCE.search(section), threat
