"""The admin REST API under /api/v1: JSON, bearer tokens (PXE Pilot's and operators' scripts)."""

import json
import logging
from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from ks.core.errors import BadRequest, Forbidden, KSError
from ks.core.roles import Action, Role, allows, needed
from ks.core.values import load_json_object
from ks.fleet import tokens
from ks.web import login_failed, refuse_if_held_back, runtime

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api/v1")
PUBLIC = {"api.openapi"}


def answer(document, status: int = 200) -> Response:
    """A JSON answer."""
    return Response(json.dumps(document, indent=1) + "\n", status=status, mimetype="application/json")


def error(message: str, status: int) -> Response:
    """A JSON error: ``{"error": ..., "status": ...}``."""
    return answer({"error": message, "status": status}, status)


def body() -> dict:
    """The request's JSON object body; BadRequest otherwise."""
    if not request.is_json:
        raise BadRequest("send a JSON object with Content-Type: application/json")
    return load_json_object(request.get_data(cache=True) or b"null", "the body")


View = TypeVar("View", bound=Callable)


def needs(action: Action) -> Callable[[View], View]:
    """Declare what a route does (read, operate, administer); ``authenticate`` checks the token's role against it."""

    def declare(view: View) -> View:
        view.ks_action = action  # type: ignore[attr-defined]
        return view

    return declare


def action_of(endpoint: str | None) -> Action:
    """What the route ``endpoint`` declared; a route that declared nothing needs the most (administer)."""
    view = current_app.view_functions.get(endpoint or "")
    return getattr(view, "ks_action", Action.ADMINISTER)


@bp.before_request
def authenticate():
    """Every route but the OpenAPI document needs ``Authorization: Bearer <token>`` of a role that may use it."""
    if request.endpoint in PUBLIC:
        return None
    if not sign_in(bearer_token()):
        response = error(
            "a valid API token is required: Authorization: Bearer <token> (kiwispray token create NAME)", 401
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="kiwispray"'
        return response
    if request.endpoint is not None:  # an unknown path answers 404 to any valid token
        require(action_of(request.endpoint))
    return None


def bearer_token() -> str | None:
    """The token of the request's ``Authorization: Bearer <token>``, if any."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def sign_in(token: str | None) -> bool:
    """Whether ``token`` is a live API token; if so, ``require`` checks its role from now on.

    A wrong token counts against the request's address, and an address past
    ``KS_LOGIN_FAILURES_PER_MINUTE`` gets ``TooManyLogins`` before its token is checked.
    """
    if not token:
        return False
    refuse_if_held_back("API")
    found = runtime().db.write(lambda session: _verified(tokens.verify(session, token)))
    if found is None:
        login_failed("API")
        return False
    g.token_id, g.token_name, g.token_role = found
    return True


def require(action: Action) -> None:
    """Forbidden unless the request's token may do ``action`` (a view calls it for what depends on the body)."""
    role: Role = g.token_role
    if not allows(role, action):
        raise Forbidden(f"this needs a token with the {needed(action).label} role (to {action.value}); "
                        f"the token {g.token_name!r} is a {role.label}")


def _verified(token) -> tuple[int, str, Role] | None:
    return (token.id, token.name, tokens.role_of(token)) if token is not None else None


@bp.errorhandler(KSError)
def ks_error(exc: KSError):
    response = error(str(exc), exc.status)
    response.headers.update(exc.headers())
    return response


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return error(exc.description or exc.name, exc.code or 500)


SOURCE = "api"  # how the history records changes made here


from ks.api import configurations, events, hosts, openapi, power  # noqa: E402,F401  (routes register on bp)
