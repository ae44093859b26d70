"""The README's settings table names every setting there is, and only those."""

from __future__ import annotations

import re
from pathlib import Path

from panthera.kernel.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\|\s*`(PANTHERA_[A-Z0-9_]+)`\s*\|")


def settings_table() -> list[str]:
    """The variables in the first column of the table under the ``## Settings`` heading."""
    section = README.read_text(encoding="utf-8").split("\n## Settings\n", 1)
    assert len(section) == 2, "README.md has no '## Settings' section"
    body = section[1].split("\n## ", 1)[0]
    return [match.group(1) for line in body.splitlines() if (match := ROW.match(line))]


def test_every_setting_is_in_the_readme() -> None:
    documented = set(settings_table())
    missing = [
        f"PANTHERA_{name.upper()}"
        for name in Settings.model_fields
        if f"PANTHERA_{name.upper()}" not in documented
    ]
    assert not missing, f"add to the Settings table in README.md: {', '.join(missing)}"


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    known = {f"PANTHERA_{name.upper()}" for name in Settings.model_fields}
    unknown = [name for name in settings_table() if name not in known]
    assert not unknown, f"not a field of Settings: {', '.join(unknown)}"


def test_each_setting_is_listed_once() -> None:
    rows = settings_table()
    twice = sorted({name for name in rows if rows.count(name) > 1})
    assert not twice, f"listed more than once: {', '.join(twice)}"
