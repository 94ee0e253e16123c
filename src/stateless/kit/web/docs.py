"""Interactive API docs (/docs, /redoc) served entirely by the app, with no CDN.

FastAPI's default pages load Swagger UI, ReDoc, fonts and a favicon from outside hosts, so they
stay blank offline, behind strict CSPs or corporate proxies. The `fastapi-offline` package (MIT)
ships the upstream bundles (Swagger UI, Apache-2.0; ReDoc, MIT) unmodified; we mount its static
folder under /docs/assets and render FastAPI's own page templates pointing there.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"

# Swagger UI options: no online validator badge (it would call an outside host), keep the
# "Try it out" panels closed until asked, show how long each request took.
_SWAGGER_UI_PARAMETERS = {
    "validatorUrl": None,
    "displayRequestDuration": True,
    "deepLinking": True,
    "defaultModelsExpandDepth": 0,
}


def assets_directory() -> Path:
    """The folder of Swagger UI and ReDoc bundles inside the installed `fastapi-offline`."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Serve /docs (Swagger UI) and /redoc (ReDoc) with every asset from this app itself.

    Create the app with `docs_url=None, redoc_url=None` so FastAPI's CDN pages are not added.
    """
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_directory()), name="docs.assets")
    openapi_path = app.openapi_url or "/openapi.json"

    @app.get(DOCS_PATH, include_in_schema=False, name="docs.swagger")
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_path}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=_SWAGGER_UI_PARAMETERS,
        )

    @app.get(REDOC_PATH, include_in_schema=False, name="docs.redoc")
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_path}",
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
