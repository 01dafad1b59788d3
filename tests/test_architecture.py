"""The dependency rule: only the HTTP layer knows about the web framework."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tokenpulse"
WEB = ("fastapi", "starlette", "uvicorn")
# The modules that speak HTTP; everything else is use cases, tables and plumbing below them.
HTTP_LAYER = {
    "tokenpulse.access",
    "tokenpulse.app",
    "tokenpulse.auth",
    "tokenpulse.cli",
    "tokenpulse.dashboard.router",
    "tokenpulse.error_handlers",
    "tokenpulse.health",
    "tokenpulse.http_protocol",
    "tokenpulse.request_body",
    "tokenpulse.runtime",
    "tokenpulse.ingest.router",
    "tokenpulse.keys.router",
    "tokenpulse.launches.router",
    "tokenpulse.usage.params",
    "tokenpulse.usage.router",
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
