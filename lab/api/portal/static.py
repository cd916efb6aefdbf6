"""The portal's page and files: `/` is `web/index.html`, `/_portal/...` the page's own modules
and styles (`web/src/`), and `/_portal/vendor/...` the terminal library as npm installed it
(`web/node_modules/`, put there by `npm ci` in the setup). Nothing is fetched from elsewhere at
page load, and the Content-Security-Policy says so to the browser.

The prefix has an underscore because the blob endpoint owns `/{account}/{container}/{blob}` and a
storage account's name (3-24 lowercase letters and digits) can never contain one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from lab.api.app_state import lab_of
from lab.api.azure.errors import PortalNotInstalled
from lab.domain.errors import NotFound

router = APIRouter(include_in_schema=False)
PREFIX = "/_portal"

#: The vendored files the page loads: URL name -> path under web/node_modules/. An explicit list,
#: so nothing else of node_modules is reachable over HTTP.
VENDOR = {
    "xterm.js": "@xterm/xterm/lib/xterm.js",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.js": "@xterm/addon-fit/lib/addon-fit.js",
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
          ".svg": "image/svg+xml"}  # fmt: skip
#: Same origin only: scripts, styles, the gateway's websocket (`'self'` covers wss to this host),
#: and images the page makes itself (the screenshot arrives as a blob: URL).
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _web_dir(request: Request) -> Path:
    web: Path = lab_of(request).settings.web_dir
    return web


def _file(path: Path) -> Response:
    return FileResponse(path, media_type=_TYPES.get(path.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff"})  # fmt: skip


@router.get("/")
async def index(request: Request) -> Response:
    page = _web_dir(request) / "index.html"
    if not page.is_file():
        raise PortalNotInstalled(f"The portal's page is missing ({page}); the lab's web/ "
                                 "directory should hold it.")  # fmt: skip
    return _file(page)


@router.get(PREFIX + "/vendor/{name}")
async def vendor(request: Request, name: str) -> Response:
    if name not in VENDOR:
        raise NotFound(f"No vendored file '{name}'; the portal serves: {', '.join(VENDOR)}.",
                       target=name)  # fmt: skip
    path = _web_dir(request) / "node_modules" / VENDOR[name]
    if not path.is_file():
        raise PortalNotInstalled(
            f"{path} is missing: the terminal library is installed by `npm ci` in web/ "
            "(`make setup` runs it)."
        )
    return _file(path)


@router.get(PREFIX + "/{name:path}")
async def own_file(request: Request, name: str) -> Response:
    root = (_web_dir(request) / "src").resolve()
    path = (root / name).resolve()
    # resolve() folds `..` and symlinks: anything that lands outside src/ is not served.
    if not path.is_relative_to(root) or not path.is_file() or path.suffix not in _TYPES:
        raise NotFound(f"The portal has no file '{name}'.", target=name)
    return _file(path)
