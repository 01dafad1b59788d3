"""The operations guide tells the truth about configuration: every setting is in its table."""

from pathlib import Path

import pytest

from tokenpulse.settings import Settings

OPERATIONS = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented_in_the_operations_guide(name: str) -> None:
    assert f"| `TOKENPULSE_{name.upper()}` |" in OPERATIONS
