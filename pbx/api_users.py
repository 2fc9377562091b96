"""The PBX's users in the HTTP API: who has which extension, team and role, and whether their
phones can be reached now, so that a CRM can map its users to the PBX's (calls name users by
id)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from pbx.api_base import ERRORS, AuthCaller, Error

__all__ = ["UserInfo", "include_users"]


class UserInfo(BaseModel):
    """A user of the PBX, as configured, and how their phones stand now."""

    id: str
    extension: str
    name: str
    role: Literal["agent", "supervisor", "admin"]
    department: str | None
    caller_id: str | None = Field(description="The number outside callees see, if set.")
    presence: Literal["available", "do_not_disturb", "offline"]
    registered: int = Field(description="Phones registered for the user now.")


UsersView = Callable[[], Sequence[UserInfo]]

router = APIRouter(tags=["users"], responses=ERRORS)


def _view(request: Request) -> UsersView:
    view: UsersView = request.app.state.users
    return view


@router.get("/users", summary="List the users")
async def list_users(request: Request, caller: AuthCaller) -> list[UserInfo]:
    """Every user of the config, in its order (any key: agents see their colleagues'
    extensions, as on a phone's directory)."""
    return list(_view(request)())


@router.get("/users/{user_id}", summary="One user",
            responses={404: {"model": Error, "description": "No user with this id"}})
async def get_user(user_id: str, request: Request, caller: AuthCaller) -> UserInfo:
    """The user ``user_id``; 404 if the config has none."""
    for user in _view(request)():
        if user.id == user_id:
            return user
    raise HTTPException(404, f"no user {user_id!r}")


def include_users(app: FastAPI, view: UsersView, prefix: str) -> None:
    app.state.users = view
    app.include_router(router, prefix=prefix)
