"""Jinja2 templates of the page and the filters they format money and time with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Router

from finsup_dagster.ledger.money import format_minor

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def money(minor: int | None, currency: str) -> str:
    """Major units with the currency's own exponent (JPY 0, KWD 3): integers only."""
    if minor is None:
        return ""
    return f"{format_minor(int(minor), currency)} {currency}"


def when(instant: str | None) -> str:
    """Canonical UTC text, shortened to the second for reading (it sorts the same)."""
    if not instant:
        return ""
    return instant[:19].replace("T", " ") + " UTC"


def short_hash(value: str | None) -> str:
    return f"{value[:12]}…" if value else ""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,  # a misspelt field fails a test, not a payout review
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=money, when=when, short_hash=short_hash)
    return env


class Renderer:
    """Renders a template with the paths of this sub-application wherever it is mounted."""

    def __init__(self, router: Router) -> None:
        self.env = _environment()
        self.router = router

    def path(self, request: Request, name: str, **params: Any) -> str:
        # Relative paths, not absolute URLs: behind a TLS proxy the scheme the app sees
        # is not the one the browser used, and CSP's form-action 'self' would refuse it.
        root = request.scope.get("root_path", "")
        return root + str(self.router.url_path_for(name, **params))

    def page(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        def path(name: str, **params: Any) -> str:
            return self.path(request, name, **params)

        html = self.env.get_template(template).render(
            {
                "path": path,
                "error": None,
                "notice": None,
                "session": None,
                "csrf": "",
                **context,
            }
        )
        return HTMLResponse(html, status_code=status)
