"""The admin REST API under /api/v1: JSON, bearer tokens (PXE Pilot's and operators' scripts)."""

import json
import logging

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException

from ks import tokens
from ks.errors import BadRequest, KSError
from ks.values import load_json_object
from ks.web import runtime

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


@bp.before_request
def authenticate():
    """Every route but the OpenAPI document needs ``Authorization: Bearer <token>``."""
    if request.endpoint in PUBLIC:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    found = None
    if scheme.lower() == "bearer" and token:
        found = runtime().db.write(lambda session: _verified(tokens.verify(session, token.strip())))
    if found is None:
        response = error(
            "a valid API token is required: Authorization: Bearer <token> (kiwispray token create NAME)", 401
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="kiwispray"'
        return response
    g.token_name = found
    return None


def _verified(token) -> str | None:
    return token.name if token is not None else None


@bp.errorhandler(KSError)
def ks_error(exc: KSError):
    return error(str(exc), exc.status)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return error(exc.description or exc.name, exc.code or 500)


SOURCE = "api"  # how the history records changes made here


from ks.api import configurations, hosts, openapi, power  # noqa: E402,F401  (routes register on bp)
