"""``kiwispray webhook``: receivers of history events (boots, finishes, failures, …)."""

import json

import click

from ks.cli.common import Group, Site
from ks.core import vault
from ks.fleet import webhooks

EVENT_HELP = ("Comma-separated event kinds to send, e.g. boot,finish,failed ('failed' is a 'timeout' line: the "
              f"deploy deadline passed); one of {', '.join((*webhooks.KINDS, *webhooks.ALIASES))}. Default: all.")


@click.group(cls=Group)
def webhook():
    """Webhooks: history events POSTed as signed JSON to other systems, with a delivery log."""


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", metavar="KINDS", default=None, help=EVENT_HELP)
@click.option("--secret", default=None, metavar="S",
              help="The secret that signs each delivery (16 to 128 characters); default: one is made up and "
                   "printed once.")
@click.option("--json", "as_json", is_flag=True, help="Print the webhook (and its secret) as JSON for scripts.")
@click.pass_obj
def add(site: Site, url: str, events: str | None, secret: str | None, as_json: bool):
    """Send the events from now on to URL (a JSON POST signed with HMAC-SHA256 of the body)."""
    kinds = webhooks.parse_kinds(events)
    box = vault.of(site.settings)

    def work(session):
        hook, made = webhooks.add(session, url, kinds, secret, box)
        return webhooks.document(hook), made

    document, made = site.migrated_db().write(work)
    if as_json:
        click.echo(json.dumps({**document, "secret": made}, indent=2))
        return
    click.echo(f"webhook {document['id']} added: {url} gets {', '.join(document['events']) or 'every event'} "
               f"from event {document['delivered_id'] + 1} on")
    if secret is None:
        click.echo(f"its secret (shown only now; the receiver checks X-KIWIspray-Signature with it): {made}")


@webhook.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def list_webhooks(site: Site, as_json: bool):
    """List webhooks and how far each got (never their secrets)."""
    with site.migrated_db().read() as session:
        rows = [webhooks.document(h) for h in webhooks.all_webhooks(session)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'ID':>4} {'EVENTS':<24} {'DELIVERED TO':>12} {'FAILING':>7}  URL")
    for r in rows:
        failing = str(r["attempts"]) if r["attempts"] else "-"
        events = ",".join(r["events"]) or "all"
        click.echo(f"{r['id']:>4} {events:<24} {r['delivered_id']:>12} {failing:>7}  {r['url']}")


@webhook.command("remove")
@click.argument("webhook_id", metavar="ID", type=click.IntRange(1))
@click.pass_obj
def remove(site: Site, webhook_id: int):
    """Remove a webhook and its delivery log; nothing more is sent to it."""
    hook = site.migrated_db().write(lambda session: webhooks.document(webhooks.remove(session, webhook_id)))
    click.echo(f"webhook {webhook_id} removed ({hook['url']})")


@webhook.command("log")
@click.argument("webhook_id", metavar="[ID]", type=click.IntRange(1), required=False)
@click.option("--limit", type=click.IntRange(1, webhooks.LOG_KEPT), default=50, show_default=True,
              help="Show the newest N attempts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def delivery_log(site: Site, webhook_id: int | None, limit: int, as_json: bool):
    """The delivery log: each attempt's time, event id and kind, HTTP status, attempt and error (of one webhook)."""
    with site.migrated_db().read() as session:
        rows = webhooks.log(session, webhook_id, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'TIME':<19} {'HOOK':>4} {'EVENT':>8} {'KIND':<12} {'STATUS':>6} {'ATTEMPT':>7}  ERROR")
    for r in rows:
        click.echo(f"{r['at'][:19]:<19} {r['webhook']:>4} {r['event_id']:>8} {r['kind'] or '-':<12} "
                   f"{r['status'] or '-':>6} {r['attempt']:>7}  {r['error']}")
