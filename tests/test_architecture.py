"""The dependency rules: only the HTTP layer knows about the web framework, the shared plumbing
knows no domain, and a domain reads another only where it is listed as allowed to."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tokenpulse"
WEB = ("fastapi", "starlette", "uvicorn")
# The modules that speak HTTP; everything else is use cases, tables and plumbing below them.
HTTP_LAYER = {
    "tokenpulse.access",
    "tokenpulse.apidocs.router",
    "tokenpulse.budgets.router",
    "tokenpulse.app",
    "tokenpulse.auth",
    "tokenpulse.cli",
    "tokenpulse.dashboard.router",
    "tokenpulse.error_handlers",
    "tokenpulse.exports.router",
    "tokenpulse.health",
    "tokenpulse.http_protocol",
    "tokenpulse.request_body",
    "tokenpulse.runtime",
    "tokenpulse.static_files",
    "tokenpulse.ingest.dependencies",
    "tokenpulse.ingest.intake",
    "tokenpulse.ingest.router",
    "tokenpulse.keys.authentication",
    "tokenpulse.keys.router",
    "tokenpulse.launches.router",
    "tokenpulse.otlp.router",
    "tokenpulse.prices.router",
    "tokenpulse.litellm.router",
    "tokenpulse.model_path",
    "tokenpulse.notifications.router",
    "tokenpulse.openai_usage.query_arrays",
    "tokenpulse.openai_usage.router",
    "tokenpulse.query_string",
    "tokenpulse.usage.params",
    "tokenpulse.usage.router",
    "tokenpulse.webhooks.router",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


MODULES = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def reaches_web(module: str, seen: set[str]) -> str | None:
    """The first web-framework import `module` leads to, directly or through tokenpulse."""
    seen.add(module)
    for name in sorted(MODULES.get(module, ())):
        if name.split(".")[0] in WEB:
            return f"{module} imports {name}"
        if name in MODULES and name not in seen and (found := reaches_web(name, seen)):
            return found
    return None


@pytest.mark.parametrize("module", sorted(set(MODULES) - HTTP_LAYER - {"tokenpulse.__main__"}))
def test_use_cases_and_what_they_use_do_not_depend_on_the_web_framework(module: str) -> None:
    assert reaches_web(module, set()) is None


def test_the_rule_is_checked_against_real_modules() -> None:
    assert reaches_web("tokenpulse.ingest.router", set()) is not None
    assert {"tokenpulse.ingest.ingestion", "tokenpulse.usage.series"} <= set(MODULES)


# One package per domain; every other module of tokenpulse is plumbing they share (settings,
# database, errors, auth, metrics, ...), which must never need one of them.
DOMAINS = {
    "apidocs",
    "budgets",
    "client",
    "dashboard",
    "ingest",
    "keys",
    "launches",
    "otlp",
    "litellm",
    "notifications",
    "openai_usage",
    "exports",
    "prices",
    "rollups",
    "simulator",
    "usage",
    "webhooks",
}
COMPOSITION = {"tokenpulse.app", "tokenpulse.cli", "tokenpulse.__main__"}
"""Where the parts are put together, the only modules that may import any of them."""
MAY_READ = {
    "usage": {"tokenpulse.rollups"},
    "launches": {"tokenpulse.rollups", "tokenpulse.usage.answers", "tokenpulse.usage.params"},
    "otlp": {"tokenpulse.ingest"},
    "litellm": {"tokenpulse.ingest"},
    "openai_usage": {"tokenpulse.rollups"},
    "exports": {"tokenpulse.rollups", "tokenpulse.usage.params"},
    "budgets": {
        "tokenpulse.rollups",
        "tokenpulse.launches.milestones",
        "tokenpulse.launches.thresholds",
        "tokenpulse.webhooks.store",
    },
    "notifications": {
        "tokenpulse.rollups",
        "tokenpulse.budgets",
        "tokenpulse.launches",
        "tokenpulse.webhooks.store",
    },
}
"""What each domain may import of another: the aggregates read the rollups, a launch's summary
answers in the measures of usage, and milestones and exports are filtered as the aggregates
are; budgets are searched as milestones are, and notify the webhooks they name."""


def domain_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tokenpulse" and len(parts) > 1 and parts[1] in DOMAINS else None


def forbidden_imports(module: str, imports: set[str]) -> list[str]:
    """The imports of `module` that the rules above do not allow."""
    if module in COMPOSITION:
        return []
    own = domain_of(module)
    allowed = MAY_READ.get(own or "", set())
    return sorted(
        name
        for name in imports
        if (other := domain_of(name)) is not None
        and other != own
        and not any(name == a or name.startswith(f"{a}.") for a in allowed)
    )


PLUMBING = sorted(name for name in MODULES if domain_of(name) is None and name not in COMPOSITION)


@pytest.mark.parametrize("module", PLUMBING)
def test_the_shared_plumbing_imports_no_domain(module: str) -> None:
    assert forbidden_imports(module, MODULES[module]) == []


@pytest.mark.parametrize("module", sorted(name for name in MODULES if domain_of(name)))
def test_a_domain_imports_another_only_where_it_may_read_it(module: str) -> None:
    assert forbidden_imports(module, MODULES[module]) == []


def test_only_the_command_line_starts_the_simulator_and_only_main_the_command_line() -> None:
    importers = {
        imported: sorted(
            name
            for name, imports in MODULES.items()
            if name != imported
            and not name.startswith(f"{imported}.")
            and any(i == imported or i.startswith(f"{imported}.") for i in imports)
        )
        for imported in ("tokenpulse.simulator", "tokenpulse.cli")
    }

    assert importers == {
        "tokenpulse.simulator": ["tokenpulse.cli"],
        "tokenpulse.cli": ["tokenpulse.__main__"],
    }


def test_the_domain_rules_see_a_forbidden_import() -> None:
    assert forbidden_imports("tokenpulse.metrics", {"tokenpulse.ingest.batcher"}) == [
        "tokenpulse.ingest.batcher"
    ]
    assert forbidden_imports("tokenpulse.ingest.router", {"tokenpulse.keys.registry"}) == [
        "tokenpulse.keys.registry"
    ]
    assert forbidden_imports("tokenpulse.usage.totals", {"tokenpulse.rollups.sums"}) == []
    assert set(PLUMBING) >= {"tokenpulse.auth", "tokenpulse.metrics", "tokenpulse.runtime"}


# The client runs in gateways, which install tokenpulse for it and nothing of the service.
CLIENT = "tokenpulse.client"
CLIENT_MAY_IMPORT = frozenset({"httpx"})
"""What the client may import beyond the standard library and itself."""
SERVICE_ONLY = frozenset(
    {"fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "sqlalchemy", "asyncpg"}
    | {"alembic", "prometheus_client", "opentelemetry", "google"}
)
"""What the service depends on and the client must never load."""


def client_imports_beyond_its_own(imports: set[str]) -> list[str]:
    return sorted(
        name
        for name in imports
        if not (name == CLIENT or name.startswith(f"{CLIENT}."))
        and name.split(".")[0] not in sys.stdlib_module_names | CLIENT_MAY_IMPORT
    )


@pytest.mark.parametrize(
    "module", sorted(name for name in MODULES if name == CLIENT or name.startswith(f"{CLIENT}."))
)
def test_the_client_imports_only_itself_the_standard_library_and_httpx(module: str) -> None:
    assert client_imports_beyond_its_own(MODULES[module]) == []


def test_the_client_rule_sees_a_forbidden_import() -> None:
    assert client_imports_beyond_its_own(
        {"json", "httpx", "tokenpulse.client.events", "tokenpulse.errors", "pydantic.fields"}
    ) == ["pydantic.fields", "tokenpulse.errors"]


@pytest.mark.process
def test_importing_the_client_loads_nothing_of_the_service_nor_of_what_it_depends_on() -> None:
    listing = "import sys, tokenpulse.client; print(*sorted(sys.modules), sep=chr(10))"
    loaded = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, check=True
    ).stdout.split()

    assert "httpx" in loaded
    assert [name for name in loaded if name.split(".")[0] in SERVICE_ONLY] == []
    ours = [name.split(".") for name in loaded if name.split(".")[0] == "tokenpulse"]
    assert [".".join(parts) for parts in ours if parts[1:2] not in ([], ["client"])] == []
