"""How hosts and events are shown: the original's text table and JSON documents."""

from ks.models import Event, Host
from ks.values import MAX_DEPTH, printable

LIST_FORMAT = "%4s %-20s %-10s %-s"


def table_header() -> str:
    """The original's header line: ``#Id Hostname State Serial#``."""
    return LIST_FORMAT % ("#Id", "Hostname", "State", "Serial#")


def table_row(host: Host) -> str:
    """One host in the original's table format; a failed host's state says so."""
    state = f"{host.state} (failed)" if host.failed_at else host.state
    return LIST_FORMAT % (host.id, printable(host.hostname), state, printable(host.serial or ""))


def hosts_table(hosts) -> str:
    """The whole table, one line per host, newline-terminated."""
    return "".join(line + "\n" for line in [table_header(), *map(table_row, hosts)])


def legacy_macs(host: Host) -> str:
    """MACs as the original printed them: upper-case, space-separated."""
    return " ".join(m.upper() for m in host.mac_list)


def metadata_lines(meta: dict, depth: int, prefix: str = "", level: int = 1) -> list[str]:
    """The original's metadata listing; nested objects only from ``-lll`` (depth > 2).

    Whatever is stored can be listed: unprintable characters are escaped and
    objects nested deeper than metadata may be today are shown as ``{...}``.
    """
    lines = []
    for key, value in sorted(meta.items(), key=lambda item: str(item[0])):
        path = f"{prefix}.{printable(key)}" if prefix else printable(key)
        if isinstance(value, dict) and level < MAX_DEPTH:
            if depth > 2:
                lines += metadata_lines(value, depth, path, level + 1)
        else:
            lines.append("        %-21s '%-s'" % (path, "{...}" if isinstance(value, dict) else printable(value)))
    return lines


def _time(value) -> str | None:
    return value.isoformat() if value else None


def host_dict(host: Host) -> dict:
    """A host as JSON (never the bootid or the BMC password)."""
    chain = host.state.split(",")
    return {
        "id": host.id,
        "hostname": host.hostname,
        "state": chain[0],
        "chain": chain,
        "macs": host.mac_list,
        "serial": host.serial,
        "uuid": host.uuid,
        "metadata": host.meta or {},
        "created_at": _time(host.created_at),
        "updated_at": _time(host.updated_at),
        "last_boot_at": _time(host.last_boot_at),
        "last_seen_at": _time(host.last_seen_at),
        "bmc": {"address": host.bmc_address, "username": host.bmc_username} if host.bmc_address else None,
        "failed": host.failed_at is not None,
        "failed_at": _time(host.failed_at),
        "deadline_at": _time(host.deadline_at),
    }


def event_dict(event: Event) -> dict:
    """A history line as JSON."""
    return {
        "id": event.id,
        "host_id": event.host_id,
        "at": _time(event.at),
        "kind": event.kind,
        "from": event.from_state,
        "to": event.to_state,
        "source": event.source,
        "detail": event.detail,
    }


def event_line(event: Event) -> str:
    """A history line for people."""
    change = f"{event.from_state or '-'} -> {event.to_state or '-'}" if event.to_state != event.from_state else (event.to_state or "-")
    return f"{event.at:%Y-%m-%d %H:%M:%S} {event.kind:<8} {event.source:<9} {change:<28} {event.detail}"
