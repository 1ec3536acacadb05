"""A parsed selector (``ks.core.selectors``) as a SQL condition on ``hosts``, for SQLite and PostgreSQL.

The meaning is ``Selector.matches``'s, evaluated by the database so that a
selector over 100,000 hosts reads only the matching rows: labels and facts
through ``json_extract`` (SQLite) or ``->>`` (PostgreSQL), globs as SQLite's
``GLOB`` (case-sensitive, literal ``*``/``?`` as ``[*]``/``[?]``) or as
``LIKE`` with ``\\`` escapes on PostgreSQL; a value without wildcards is an
equality, which the indexes on MACs, serials and UUIDs answer.
"""

from sqlalchemy import String, and_, cast, func, literal, not_, select
from sqlalchemy.sql.elements import ColumnElement

from ks.core.selectors import Pattern, Selector, Term
from ks.records.models import Host, HostMac


def where(selector: Selector, dialect: str) -> ColumnElement[bool]:
    """The condition on ``Host`` that holds for exactly the hosts ``selector`` matches."""
    return and_(*(_term(term, dialect) for term in selector.terms))


def _term(term: Term, dialect: str) -> ColumnElement[bool]:
    if term.scope == "builtin" and term.key == "mac":
        # The hosts owning a matching MAC: one look-up in the MACs' primary key for an exact MAC.
        owners = select(HostMac.host_id).where(_matches(HostMac.mac, term.pattern, dialect))
        return Host.id.not_in(owners) if term.negated else Host.id.in_(owners)
    text = term.pattern.literal
    if term.scope == "builtin" and term.key == "id" and text is not None and text.isdigit() and len(text) < 19:
        condition = Host.id == int(text)  # the primary key
    else:
        condition = _matches(_value(term, dialect), term.pattern, dialect)
    # The value is never NULL (missing labels and facts are ''), so NOT is the complement.
    return not_(condition) if term.negated else condition


def _value(term: Term, dialect: str):
    """The text the term compares: a column, the current state, a label, a fact, or label-else-fact."""
    if term.scope == "builtin":
        if term.key == "id":
            return cast(Host.id, String)
        if term.key == "chain":
            return Host.state
        if term.key == "state":
            if dialect == "postgresql":
                return func.split_part(Host.state, ",", 1)
            return func.substr(Host.state, 1, func.instr(Host.state + ",", ",") - 1)
        return func.coalesce(getattr(Host, term.key), "")
    label, fact = Host.labels[term.key].as_string(), Host.facts[term.key].as_string()
    if term.scope == "label":
        return func.coalesce(label, "")
    if term.scope == "fact":
        return func.coalesce(fact, "")
    return func.coalesce(label, fact, "")


def _matches(value, pattern: Pattern, dialect: str) -> ColumnElement[bool]:
    text = pattern.literal
    if text is not None:
        return value == literal(text, String)
    if dialect == "sqlite":
        return value.op("GLOB", is_comparison=True)(literal(pattern.glob(), String))
    return value.like(literal(pattern.like(), String), escape="\\")


def selected_ids(session, selector: Selector) -> list[int]:
    """The ids of the hosts ``selector`` matches, in order."""
    condition = where(selector, session.get_bind().dialect.name)
    return list(session.scalars(select(Host.id).where(condition).order_by(Host.id)))
