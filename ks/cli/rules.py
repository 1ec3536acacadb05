"""``kiwispray rules``: check the enrollment rules of rules.toml and try them on a machine."""

import json
from typing import Any

import click

from ks.boot import images
from ks.cli.common import Group, Site, table
from ks.core import rules, states
from ks.core.errors import BadRequest, RulesError
from ks.core.identity import check_fact_key, normalize_fact, normalize_mac, normalize_serial, normalize_uuid


@click.group("rules", cls=Group)
def rules_group():
    """Enrollment rules (<root>/rules.toml): what machines seen for the first time get."""


def _load(site: Site) -> rules.RuleSet:
    return rules.load(rules.path_of(site.root), images.image_names(site.root))


@rules_group.command("check")
@click.pass_obj
def check(site: Site):
    """Check rules.toml: exit 0 if it is good, else exit 1 with one line per mistake, naming where it is.

    The server checks the file the same way when it starts (and refuses to start
    on a mistake) and whenever the file changes under it.
    """
    path = rules.path_of(site.root)
    try:
        found = _load(site)
    except RulesError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise click.exceptions.Exit(1) from None
    if not path.exists():
        click.echo(f"{path}: no rules file; every unknown machine gets the initial chain "
                   f"'{site.settings.initial_chain}'")
        return
    names = ", ".join(rule.name for rule in found.rules)
    click.echo(f"{path}: {len(found)} rule(s), no mistakes" + (f": {names}" if names else ""))


def _fact(ctx: click.Context, param: click.Parameter, given: tuple[str, ...]) -> dict[str, str]:
    facts = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE, e.g. --fact product='PowerEdge R640'")
        try:
            normalized = normalize_fact(check_fact_key(key), value)
        except BadRequest as exc:
            raise click.BadParameter(str(exc)) from None
        if normalized is not None:
            facts[key] = normalized
    return facts


@rules_group.command("test")
@click.option("--mac", "macs", multiple=True, required=True, help="A MAC of the machine (repeatable, first one first).")
@click.option("--serial", default="", help="Its DMI serial.")
@click.option("--uuid", default="", help="Its DMI UUID.")
@click.option("--fact", "facts", multiple=True, callback=_fact, metavar="KEY=VALUE",
              help="A fact it reports, e.g. --fact product='PowerEdge R640' (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def test(site: Site, macs: tuple[str, ...], serial: str, uuid: str, facts: dict[str, str], as_json: bool):
    """Show which rule a machine seen for the first time would match and what it would get, changing nothing.

    The hostname is the one the rule's next machine gets (its next seq); values
    are normalised as the server does (placeholder serials dropped, MACs in
    aa:bb:cc:dd:ee:ff form).
    """
    from ks.boot import booting

    try:
        machine = rules.Machine(
            macs=tuple(dict.fromkeys(normalize_mac(mac) for mac in macs)), serial=normalize_serial(serial),
            uuid=normalize_uuid(uuid), facts=facts,
        )
    except BadRequest as exc:
        raise click.UsageError(str(exc)) from None
    try:
        found = _load(site)
    except RulesError as exc:
        raise click.ClickException(f"{rules.path_of(site.root)} has mistakes (`kiwispray rules check` lists "
                                   f"them); first: {exc.problems[0]}") from None
    rule = found.first_match(machine)
    initial = states.parse_chain(site.settings.initial_chain)
    result: dict[str, Any]
    if rule is None:
        result = {"rule": None, "position": None, "seq": None, "chain": list(initial),
                  "hostname": rules.DEFAULT_HOSTNAME, "labels": {}, "problem": ""}
    else:
        seq = 1  # a site without a database yet has enrolled nothing
        if site._missing_database() is None:
            with site.migrated_db().read() as session:
                seq = booting.peek_seq(session, rule.name)
        got = rule.enroll(machine, seq)
        result = {"rule": rule.name, "position": rule.position, "seq": seq, "chain": list(got.chain or initial),
                  "hostname": got.hostname, "labels": got.labels, "problem": got.problem}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if rule is None:
        rule_text = f"none of {len(found)} rule(s) matches: the server's initial chain"
    else:
        rule_text = f"{rule.name} (rule {rule.position} of {len(found)})"
    hostname = result["hostname"] + (f" (seq {result['seq']})" if result["seq"] else "")
    if result["problem"]:
        hostname += f" ({result['problem']})"
    labels = ",".join(f"{k}={v}" for k, v in result["labels"].items()) or "-"
    click.echo(table([["rule", rule_text], ["chain", ",".join(result["chain"])], ["hostname", hostname],
                      ["labels", labels]], ["FIELD", "VALUE"]))
