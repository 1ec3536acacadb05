"""Bearer tokens for the admin API. The token is shown once; only its SHA-256 is kept."""

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ks.core.errors import BadRequest, Conflict, NotFound
from ks.core.roles import DEFAULT, Role, parse_role
from ks.records.models import ApiToken, utcnow

PREFIX = "ks_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# last_used_at is a hint for operators, not an audit log: refresh it at most this often.
TOUCH_EVERY = timedelta(minutes=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create(session: Session, name: str, role: Role = DEFAULT) -> str:
    """Create a token called ``name`` with ``role``; returns the token, which is never shown again."""
    if not NAME.fullmatch(name or ""):
        raise BadRequest(f"{name!r} is not a valid token name (letters, digits, '.', '_', '-'; up to 64)")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise Conflict(f"a token called {name!r} already exists; revoke it or pick another name")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=_hash(token), role=role.label))
    return token


def verify(session: Session, token: str | None) -> ApiToken | None:
    """The live token matching ``token``, or None."""
    if not token or not token.startswith(PREFIX) or len(token) > 256:
        return None
    found = session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token), ApiToken.revoked_at.is_(None)))
    if found is not None and (found.last_used_at is None or utcnow() - found.last_used_at > TOUCH_EVERY):
        found.last_used_at = utcnow()
    return found


def live(session: Session, token_id: int) -> ApiToken | None:
    """The token with id ``token_id`` unless it was revoked (a dashboard session names its token by id)."""
    return session.scalar(select(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None)))


def end_sessions(session: Session, token_id: int) -> None:
    """Log out: end every dashboard session opened with the token ``token_id``, in all processes and servers."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id)
                    .values(sessions_ended=ApiToken.sessions_ended + 1))


def all_tokens(session: Session) -> list[ApiToken]:
    """Every token, revoked ones included, oldest first."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke(session: Session, name: str) -> ApiToken:
    """Revoke the token called ``name``; it stops working at once."""
    token = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise NotFound(f"no token called {name!r}; `kiwispray token list` shows them")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


def role_of(token: ApiToken) -> Role:
    """The role of a stored token; the least one for a value this version does not know."""
    try:
        return parse_role(token.role)
    except BadRequest:
        return Role.VIEWER
