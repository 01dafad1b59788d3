"""Operations: liveness and readiness, also while stopping."""

import signal
import time
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV
from tests.servers import running_server


def test_readiness_turns_503_at_once_on_sigterm_while_the_worker_drains(
    db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    env = {
        "TOKENPULSE_DATABASE_URL": database_url,
        "TOKENPULSE_SHUTDOWN_DRAIN": "3",
        **UNLIMITED_ENV,
    }
    with running_server(tmp_path, env=env) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200

        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        draining = httpx.get(f"{server.url}/readyz")
        alive = httpx.get(f"{server.url}/healthz")

        assert draining.status_code == 503
        assert draining.json()["checks"]["shutdown"] == "shutting down"
        assert alive.json() == {"status": "ok"}
        assert server.process.wait(timeout=30) == 0
