"""How hosts and events are shown: the original's text table and JSON documents."""

from ks.core import progress
from ks.core.values import MAX_DEPTH, printable
from ks.records.models import Event
from ks.records.record import HostRecord

LIST_HEADER = ("#Id", "Hostname", "State", "Serial#")
# The original's columns ("%4s %-20s %-10s %-s"): the least width of each but the last.
LIST_WIDTHS = (4, 20, 10)


def _cells(host: HostRecord) -> tuple:
    state = f"{host.state} (failed)" if host.failed else host.state
    return host.id, printable(host.hostname), state, printable(host.serial or "")


def list_format(hosts) -> str:
    """The original's line format, each column widened to its longest value so the columns stay aligned.

    A fleet whose values fit the original's widths is listed exactly as the original did.
    """
    rows = [LIST_HEADER, *map(_cells, hosts)]
    widths = [max(least, *(len(str(row[i])) for row in rows)) for i, least in enumerate(LIST_WIDTHS)]
    return "%{}s %-{}s %-{}s %-s".format(*widths)


def with_progress(line_format: str, hosts) -> str:
    """The original's format with the serial column padded and a Progress column after it."""
    width = max(len(LIST_HEADER[3]), *(len(_cells(h)[3]) for h in hosts))
    return line_format[: -len("%-s")] + f"%-{width}s %-s"


def table_header(line_format: str, show_progress: bool = False) -> str:
    """The original's header line: ``#Id Hostname State Serial#`` (and ``Progress``)."""
    return line_format % (LIST_HEADER + ("Progress",) if show_progress else LIST_HEADER)


def table_row(host: HostRecord, line_format: str, show_progress: bool = False) -> str:
    """One host in the original's table format; a failed host's state says so."""
    if show_progress:
        return line_format % (*_cells(host), progress.describe(progress.phase(host)))
    return line_format % _cells(host)


def hosts_table(hosts) -> str:
    """The whole table, one line per host, newline-terminated."""
    line_format = list_format(hosts)
    return "".join(line + "\n" for line in [table_header(line_format), *(table_row(h, line_format) for h in hosts)])


def legacy_macs(host: HostRecord) -> str:
    """MACs as the original printed them: upper-case, space-separated."""
    return " ".join(m.upper() for m in host.macs)


def pairs(values: dict) -> str:
    """Labels or facts on one line: ``k=v,k=v``, sorted by key, unprintable characters escaped."""
    return ",".join(f"{printable(k)}={printable(v)}" for k, v in sorted(values.items(), key=lambda item: str(item[0])))


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
            shown = "{...}" if isinstance(value, dict) else printable(value)
            lines.append(f"        {path:<21} '{shown}'")
    return lines


def event_dict(event: Event) -> dict:
    """A history line as JSON."""
    return {
        "id": event.id,
        "host_id": event.host_id,
        "at": event.at.isoformat() if event.at else None,
        "kind": event.kind,
        "from": event.from_state,
        "to": event.to_state,
        "source": event.source,
        "detail": event.detail,
    }


def event_lines(events: list[Event]) -> list[str]:
    """History lines for people, their columns as wide as the widest value shown (at least 8, 9 and 28)."""
    rows = [(f"{e.at:%Y-%m-%d %H:%M:%S}", e.kind, e.source, _change(e), e.detail) for e in events]
    widths = [max([minimum, *(len(row[i]) for row in rows)]) for i, minimum in ((1, 8), (2, 9), (3, 28))]
    return [f"{at} {kind:<{widths[0]}} {source:<{widths[1]}} {change:<{widths[2]}} {detail}".rstrip()
            for at, kind, source, change, detail in rows]


def _change(event: Event) -> str:
    if event.to_state != event.from_state:
        return f"{event.from_state or '-'} -> {event.to_state or '-'}"
    return event.to_state or "-"


def human_size(size: int) -> str:
    """1536 -> '1.5K': sizes as operators read them in `ls -lh`."""
    scaled = float(size)
    for unit in ("B", "K", "M", "G"):
        if scaled < 1024:
            return f"{scaled:.0f}{unit}" if unit == "B" else f"{scaled:.1f}{unit}"
        scaled /= 1024
    return f"{scaled:.1f}T"
