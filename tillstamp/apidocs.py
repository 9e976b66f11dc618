"""`/docs` without the internet: Swagger UI served from the `swagger-ui-bundle-v2` package.

FastAPI's own `/docs` page loads Swagger UI from a CDN, so on a till behind a shop's router, or
at a head office without outside access, it was a blank page. The agent and HQ both create
their app with `docs_url=None, redoc_url=None` and call `add_offline_docs(app)`: the page and
its script, style and icon all come from this process.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = "/docs-assets"
_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}


def swagger_ui_dir() -> Path:
    """The folder holding Swagger UI's files (the `swagger_ui_bundle` module of swagger-ui-bundle-v2)."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def add_offline_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at `docs_url` for `app`'s OpenAPI, every asset from the package."""
    folder = swagger_ui_dir()

    @app.get(docs_url, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} · docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media = _FILES.get(name)
        if media is None:  # only the files the page names: no path from the request reaches the disk
            raise HTTPException(404)
        return FileResponse(folder / name, media_type=media,
                            headers={"Cache-Control": "max-age=86400"})
