"""The tests see none of the TOKENPULSE_* settings exported where they run, but the database
they are pointed at."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPORTED = {
    "TOKENPULSE_MAX_EVENTS_PER_REQUEST": "1",
    "TOKENPULSE_TEST_DATABASE_URL": "postgresql://probe@127.0.0.1/probe",
}
PROBE = """
import os

from tokenpulse.settings import Settings


def test_settings_have_their_defaults_and_the_test_database_is_kept() -> None:
    assert Settings().max_events_per_request == 10_000
    assert os.environ["TOKENPULSE_TEST_DATABASE_URL"] == "postgresql://probe@127.0.0.1/probe"
"""


def run_probe(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """pytest on the probe alone, in an environment that exports `EXPORTED`."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    return subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path)),
            *options,
            str(probe),
        ],
        cwd=REPO,
        env={**os.environ, **EXPORTED},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.process
def test_a_setting_exported_where_the_tests_run_does_not_reach_the_settings_they_build(
    tmp_path: Path,
) -> None:
    isolated = run_probe(tmp_path, "-p", "tests.conftest")
    # The same probe without the suite's fixtures: it does see the variable.
    exposed = run_probe(tmp_path)

    assert isolated.returncode == 0, isolated.stdout + isolated.stderr
    assert exposed.returncode == 1, exposed.stdout + exposed.stderr
    assert "assert 1 == 10000" in exposed.stdout
