"""The portal's device sign-in page (`/device`): where `az login --use-device-code` sends the
user. A lab user signs in with a username and password and enters the code the CLI printed;
the waiting CLI then gets its tokens. A plain server-rendered form: it works in any browser,
with no script."""

from __future__ import annotations

import asyncio
from html import escape
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lab.api.azure.common import lab_of
from lab.api.portal.static import CSP
from lab.domain.errors import LabError

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Serial Console Lab: sign in a device</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:4em auto}}label{{display:block;
margin-top:1em}}input{{width:100%;padding:.4em}}.err{{color:#a00}}.ok{{color:#070}}</style>
</head><body><h1>Sign in a device</h1>{message}
<form method="post" action="/device">
<label>Code <input name="code" id="code" autocomplete="off" value="{code}" required></label>
<label>Username <input name="username" id="username" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password"
 autocomplete="current-password" required></label>
<p><button type="submit" id="signin">Sign in</button></p></form></body></html>"""


def _page(message: str = "", code: str = "", status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(message=message, code=escape(code)), status_code=status,
                        headers={"Content-Security-Policy": CSP,
                                 "Cache-Control": "no-store"})  # fmt: skip


@router.get("/device")
async def device_page() -> HTMLResponse:
    return _page("<p>Enter the code your command line shows, then sign in as a lab user.</p>")


@router.post("/device")
async def device_sign_in(request: Request) -> HTMLResponse:
    fields = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
    code, username = fields.get("code", ""), fields.get("username", "")
    lab = lab_of(request)
    user = lab.identity.user(username)
    # The password hash check costs about 50 ms of CPU: off the event loop.
    if user is None or not await asyncio.to_thread(lab.identity.secret_ok, user,
                                                   fields.get("password", "")):
        return _page('<p class="err">Wrong username or password.</p>', code, 401)
    try:
        lab.device_sign_ins.approve(code, user.object_id)
    except LabError as exc:
        return _page(f'<p class="err">{escape(exc.message)}</p>', code, 400)
    return _page(
        f'<p class="ok" id="done">Signed in as {escape(user.name)}. You may close this '
        "window and go back to your command line.</p>"
    )
