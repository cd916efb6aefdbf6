"""`POST /_portal/api/password`: a user chooses their own password, proving who they are with
the current one. The sign-in page calls it when the authority answers AADSTS50055 (a password
made for the user, from a class's sign-in sheet, is good only for this); any user may use it to
change theirs. No bearer token: a temporary password gets none."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from lab.api.azure.common import lab_of

router = APIRouter(include_in_schema=False)


class PasswordChange(BaseModel):
    username: str = Field(max_length=64)
    current_password: str = Field(alias="currentPassword", max_length=256)
    new_password: str = Field(alias="newPassword", max_length=256)


@router.post("/_portal/api/password")
async def change_password(request: Request, body: PasswordChange) -> dict[str, str]:
    lab = lab_of(request)
    # scrypt checks the current one and hashes the new one (~50 ms each): off the event loop.
    user = await asyncio.to_thread(lab.identity.change_password, body.username,
                                   body.current_password, body.new_password)  # fmt: skip
    lab.consoles.audit.record("password-changed", user=user.name)
    return {"status": "changed", "name": user.name}
