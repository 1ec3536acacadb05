"""Roles: the table of what each role may do, and the role a token carries."""

import pytest

from ks.core.errors import BadRequest
from ks.core.roles import Action, Role, allows, parse_role
from ks.fleet import tokens
from ks.records.models import ApiToken


@pytest.mark.parametrize("role, action, allowed", [
    (Role.VIEWER, Action.READ, True), (Role.VIEWER, Action.OPERATE, False), (Role.VIEWER, Action.ADMINISTER, False),
    (Role.OPERATOR, Action.READ, True), (Role.OPERATOR, Action.OPERATE, True),
    (Role.OPERATOR, Action.ADMINISTER, False),
    (Role.ADMIN, Action.READ, True), (Role.ADMIN, Action.OPERATE, True), (Role.ADMIN, Action.ADMINISTER, True),
])
def test_each_role_may_do_what_the_table_says(role, action, allowed):
    assert allows(role, action) is allowed


@pytest.mark.parametrize("text", ["Admin", "root", "", " viewer", None, 3])
def test_only_the_three_names_are_roles(text):
    with pytest.raises(BadRequest, match="choose one of viewer, operator, admin"):
        parse_role(text)


def test_a_token_keeps_its_role_and_old_tokens_are_admin(db):
    db.write(lambda s: tokens.create(s, "reader", parse_role("viewer")))
    db.write(lambda s: tokens.create(s, "old"))
    with db.read() as s:
        found = {t.name: tokens.role_of(t) for t in tokens.all_tokens(s)}
    assert found == {"reader": Role.VIEWER, "old": Role.ADMIN}
    assert tokens.role_of(ApiToken(name="x", token_hash="0", role="superuser")) is Role.VIEWER
