"""The README tells the truth about configuration: every setting is in its table."""

from pathlib import Path

import pytest

from tokenpulse.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented_in_the_readme(name: str) -> None:
    assert f"| `TOKENPULSE_{name.upper()}` |" in README
