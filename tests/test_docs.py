"""The docs are true to the code: settings, CLI reference, API routes, architecture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.routing import APIRoute

from modelport.api import dashboard, scoring, v1, v2
from modelport.settings import describe

ROOT = Path(__file__).resolve().parent.parent


def test_generated_references_are_current() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/gen_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_setting_is_documented_with_its_variable() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    for row in describe():
        assert f"`{row['name']}`" in text and f"`{row['env']}`" in text


def test_every_route_is_in_the_api_doc() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    v1_routes = [route for router in v1.ROUTERS for route in router.routes]
    for route in [*v1_routes, *v2.router.routes, *dashboard.router.routes]:
        assert isinstance(route, APIRoute)
        for method in route.methods:
            assert f"{method} {route.path}" in text, f"{method} {route.path} is not in docs/api.md"
    for scoring_route in scoring.ROUTES:
        assert f"POST {scoring_route.path}" in text, scoring_route.path


def test_architecture_names_modules_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "src" / "modelport"
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if (
            rel.parts[0] in ("store",) and rel.name in ("__init__.py", "env.py")
        ) or "versions" in rel.parts:
            continue
        if rel.name in ("__init__.py", "__main__.py", "_base.py", "mlflow.py", "env.py"):
            continue
        assert rel.name in text, f"docs/architecture.md does not mention {rel}"


def test_changelog_has_an_unreleased_section() -> None:
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
