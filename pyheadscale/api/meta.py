"""Unauthenticated routes about the server itself, at Headscale's addresses: `/version`, `/swagger` and the
API description at `/swagger/v1/openapiv2.json`."""

from __future__ import annotations

import platform
import sys

from aiohttp import web

from pyheadscale import __version__
from pyheadscale.api.openapi import serve_document

DOCUMENT_PATH = "/swagger/v1/openapiv2.json"

# The Headscale release whose API this one answers as. Tools gate features on `/version` (headplane reads it
# as semver), so the version reads as that release, with pyheadscale's own as semver build metadata.
HEADSCALE_API_VERSION = "0.29.2"

# The browser fetches Swagger UI itself, as with Headscale's page; the server only names the document.
_SWAGGER_PAGE = f"""<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>pyheadscale API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"><p>The API description is at <a href="{DOCUMENT_PATH}">{DOCUMENT_PATH}</a>.</p></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>
window.addEventListener("load", () => {{
  window.ui = SwaggerUIBundle({{url: "{DOCUMENT_PATH}", dom_id: "#swagger-ui", deepLinking: true}});
}});
</script>
</body>
</html>
"""


def version_info() -> dict[str, object]:
    """The shape of Headscale's `/version` and `version -o json`, filled with what describes this build."""
    return {
        "version": f"v{HEADSCALE_API_VERSION}+pyheadscale.{__version__}",
        "commit": "unknown",
        "buildTime": "unknown",
        "go": {
            "version": f"python{platform.python_version()}",
            "os": sys.platform,
            "arch": platform.machine(),
        },
        "dirty": False,
    }


async def _version(_request: web.Request) -> web.Response:
    return web.json_response(version_info())


async def _swagger(_request: web.Request) -> web.Response:
    return web.Response(text=_SWAGGER_PAGE, content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/version", _version)
    app.router.add_get("/swagger", _swagger)
    app.router.add_get(DOCUMENT_PATH, serve_document)
