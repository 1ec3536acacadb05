"""``kiwispray token``: bearer tokens for the admin API."""

import json

import click

from ks.cli.common import DEFAULT_TOKEN_FILE, Group, Site
from ks.core import roles
from ks.fleet import tokens


@click.group(cls=Group)
def token():
    """Bearer tokens for the admin API (/api/v1)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(roles.NAMES), default=roles.DEFAULT.label, show_default=True,
              help="What the token may do: viewer reads; operator also changes states, hostnames, metadata, "
                   "retries, deploys and power; admin also sets BMC credentials and deletes hosts.")
@click.pass_obj
def create(site: Site, name: str, role: str):
    """Create a token and print it once; only its hash is kept."""
    value = site.migrated_db().write(lambda session: tokens.create(session, name, roles.parse_role(role)))
    click.echo(value)
    click.echo(f"token {name!r} ({role}) created; it is shown only now. Use it as: Authorization: Bearer <token>",
               err=True)
    click.echo(f"`kiwispray --server URL host …` reads it from {DEFAULT_TOKEN_FILE} on the machine it runs on "
               "(another file: --token-file or KS_TOKEN_FILE), or from the variable KS_TOKEN, which comes first",
               err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def list_tokens(site: Site, as_json: bool):
    """List tokens (never their values)."""
    with site.migrated_db().read() as session:
        rows = [
            {"name": t.name, "role": tokens.role_of(t).label, "created_at": t.created_at.isoformat(),
             "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
             "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
            for t in tokens.all_tokens(session)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAME':<24} {'ROLE':<9} {'CREATED':<20} {'LAST USED':<20} STATUS")
    for r in rows:
        status = "revoked" if r["revoked_at"] else "active"
        click.echo(f"{r['name']:<24} {r['role']:<9} {str(r['created_at'])[:19]:<20} "
                   f"{(r['last_used_at'] or '-')[:19]:<20} {status}")


@token.command("revoke")
@click.argument("name")
@click.pass_obj
def revoke(site: Site, name: str):
    """Revoke a token; requests with it get 401 from now on."""
    site.migrated_db().write(lambda session: tokens.revoke(session, name))
    click.echo(f"token {name!r} revoked")
