"""Roles on every API route, table-driven: each role against each route gets what the table says."""

import json

import pytest

from ks.cli.main import cli
from ks.core.roles import Role
from ks.fleet import machines, tokens

from helpers import MAC1, boot

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

BMC = {"address": "ipmi://127.0.0.1:1", "username": "admin", "password": "secret"}
# method, path, body, the least role that may: every route of /api/v1 but the OpenAPI document.
ROUTES = [
    ("GET", "/hosts", None, Role.VIEWER),
    ("GET", "/hosts/1", None, Role.VIEWER),
    ("GET", "/hosts/1/history", None, Role.VIEWER),
    ("GET", "/configurations", None, Role.VIEWER),
    ("GET", "/configurations/image1", None, Role.VIEWER),
    ("GET", "/discovery", None, Role.VIEWER),
    ("GET", "/events?after=0", None, Role.VIEWER),
    ("PATCH", "/hosts/1", {"hostname": "node1"}, Role.OPERATOR),
    ("PATCH", "/hosts/1", {"state": "wipe,image1", "metadata": {"rack": "4"}}, Role.OPERATOR),
    ("POST", "/hosts/1/power", {"action": "status"}, Role.OPERATOR),
    ("PATCH", "/hosts/1/reboot", None, Role.OPERATOR),
    ("PATCH", "/discovery", None, Role.OPERATOR),
    ("PUT", "/configurations/image1/deploy", {"hosts": [{"name": "1"}]}, Role.OPERATOR),
    ("PATCH", "/hosts?selector=id%3D1", {"state": "wipe,image1"}, Role.OPERATOR),
    ("GET", "/hosts/1/nocloud/meta-data", None, Role.OPERATOR),
    ("GET", "/hosts/1/ignition", None, Role.OPERATOR),
    ("PATCH", "/hosts/1", {"bmc": BMC}, Role.ADMIN),
    ("PATCH", "/hosts/1", {"hostname": "node1", "bmc": None}, Role.ADMIN),
    ("DELETE", "/hosts/1", None, Role.ADMIN),
]


@pytest.fixture
def role_tokens(db):
    return {role: db.write(lambda s, role=role: tokens.create(s, role.label, role)) for role in Role}


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.label)
@pytest.mark.parametrize("method, path, document, least", ROUTES,
                         ids=[f"{m} {p} {sorted(d or {})}" for m, p, d, _ in ROUTES])
def test_each_role_gets_what_the_table_says(client, db, role_tokens, role, method, path, document, least):
    boot(client, MAC1)
    with db.read() as s:
        before = [(h.hostname, h.state, h.bmc_address) for h in machines.list_hosts(s)]
    r = client.open("/api/v1" + path, method=method, json=document,
                    headers={"Authorization": f"Bearer {role_tokens[role]}"})
    try:
        if role >= least:
            # Allowed: whatever the route answers (a host without a BMC: 409), never a refusal for the role.
            assert r.status_code not in (401, 403), (r.status_code, r.get_data(as_text=True)[:300])
        else:
            assert r.status_code == 403
            assert r.json["status"] == 403
            # It names the role needed (a viewer's PATCH of a BMC fails on the route's operator first) and the token's.
            needed = [r.label for r in Role if role < r <= least]
            assert any(f"the {n} role" in r.json["error"] for n in needed) and f"is a {role.label}" in r.json["error"]
            with db.read() as s:
                after = [(h.hostname, h.state, h.bmc_address) for h in machines.list_hosts(s)]
            assert after == before, "a refused request changed nothing"
    finally:
        r.close()


def test_the_table_covers_every_route_and_the_openapi_document_says_each_role(app, client):
    routes = {(m, rule.rule) for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
              for m in rule.methods - {"HEAD", "OPTIONS"}} - {("GET", "/api/v1/openapi.json")}
    covered = set()
    for method, path, _, _ in ROUTES:
        adapter = app.url_map.bind("localhost")
        endpoint, _ = adapter.match("/api/v1" + path.split("?")[0], method=method)
        rule = next(r for r in app.url_map.iter_rules(endpoint))
        covered.add((method, rule.rule))
    assert routes == covered, "a route of /api/v1 is missing from ROUTES"
    paths = client.get("/api/v1/openapi.json").json["paths"]
    for method, path, document, least in ROUTES:
        if method == "PATCH" and path == "/hosts/1" and document and "bmc" in document:
            continue  # the route's own role is operator; its bmc field needs admin (said in the description)
        template = (path.split("?")[0].replace("/1", "/{ref}").replace("/image1", "/{name}")
                    .replace("/meta-data", "/{file}"))
        assert paths[template][method.lower()]["x-kiwispray-role"] == least.label, (method, path)


def test_token_create_takes_a_role_and_list_shows_it(cli_runner, root, app, database_url):
    env = {"KS_DATABASE_URL": database_url}
    for args in (["viewer1", "--role", "viewer"], ["op1", "--role", "operator"], ["adm1"]):
        r = cli_runner.invoke(cli, ["--root", str(root), "token", "create", *args], env=env)
        assert r.exit_code == 0, r.output
    r = cli_runner.invoke(cli, ["--root", str(root), "token", "create", "x", "--role", "root"], env=env)
    assert r.exit_code == 2 and "root" in r.output
    listed = json.loads(cli_runner.invoke(cli, ["--root", str(root), "token", "list", "--json"], env=env).output)
    assert [(t["name"], t["role"]) for t in listed] == [("viewer1", "viewer"), ("op1", "operator"), ("adm1", "admin")]
    table = cli_runner.invoke(cli, ["--root", str(root), "token", "list"], env=env).output
    assert "ROLE" in table.splitlines()[0] and "operator" in table.splitlines()[2]
