"""The host record: what the boot path, templates, listings and the API see of a host.

One frozen value read from the ORM ``Host`` or from a boot-path row by the same
mapping (``COLUMNS``, derived from the table definition). Each field declares
how the JSON document shows it and its OpenAPI schema, so a new column is the
migration, the model column and one field here.
"""

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import JSON, ColumnElement, inspect

from ks.core import progress, states
from ks.core.values import load_stored_json
from ks.records.models import Host, UTCDateTime

NULLABLE_STRING = {"type": "string", "nullable": True}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {**NULLABLE_STRING, "format": "date-time"}


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def shown(schema: dict | None = None, name: str | None = None, show=None, template: bool = False):
    """A record field: its JSON key (the field's name unless ``name``), its schema, or ``show(record) -> dict``.

    ``template``: templates see it too, as ``host.<key>`` (script-safe, see ``ks.boot.render.safe_host``).
    """
    return field(metadata={"name": name, "schema": schema, "show": show, "template": template})


def _hidden(host: "HostRecord") -> dict:
    return {}


def _state(host: "HostRecord") -> dict:
    chain = states.stored_chain(host.state)
    return {"state": chain[0], "chain": list(chain)}


def _bmc(host: "HostRecord") -> dict:
    return {"bmc": {"address": host.bmc_address, "username": host.bmc_username} if host.bmc_address else None}


def _progress(host: "HostRecord") -> dict:
    return {"progress": progress.phase(host)}


def _failed(host: "HostRecord") -> dict:
    return {"failed": host.failed, "failed_at": _time(host.failed_at)}


@dataclass(frozen=True)
class HostRecord:
    """A host as read in one transaction; never the bootid, the BMC password only encrypted."""

    id: int = shown({"type": "integer", "minimum": 1})
    hostname: str = shown({"type": "string"})
    state: str = shown(show=_state, schema={
        "state": {"type": "string", "description": "The current state: the first of the chain"},
        "chain": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    })
    macs: tuple[str, ...] = shown(
        {"type": "array", "items": {"type": "string", "pattern": "^([0-9a-f]{2}:){5}[0-9a-f]{2}$"}}
    )
    serial: str | None = shown(NULLABLE_STRING)
    uuid: str | None = shown(NULLABLE_STRING)
    meta: dict = shown({"type": "object"}, name="metadata")
    facts: dict = shown({"type": "object", "additionalProperties": {"type": "string"}}, template=True)
    labels: dict = shown({"type": "object", "additionalProperties": {"type": "string"}}, template=True)
    created_at: datetime = shown(TIME)
    updated_at: datetime = shown(TIME)
    last_boot_at: datetime | None = shown(NULLABLE_TIME)
    last_seen_at: datetime | None = shown(NULLABLE_TIME)
    bmc_address: str | None = shown(show=_bmc, schema={"bmc": {
        "type": "object", "nullable": True, "required": ["address", "username"],
        "properties": {"address": {"type": "string"}, "username": NULLABLE_STRING},
    }})
    bmc_username: str | None = shown(show=_hidden)  # shown within "bmc"
    bmc_password: str | None = shown(show=_hidden)  # encrypted (ks.core.vault), for power actions only
    failed_at: datetime | None = shown(show=_failed, schema={"failed": {"type": "boolean"}, "failed_at": NULLABLE_TIME})
    deadline_at: datetime | None = shown(NULLABLE_TIME)
    # The current boot's progress, shown as one "progress" object (ks.core.progress).
    boot_finished: bool = shown(show=_progress, schema=progress.SCHEMA)
    download_sent: int = shown(show=_hidden)
    download_size: int | None = shown(show=_hidden)
    post_install_at: datetime | None = shown(show=_hidden)
    chain_set_at: datetime | None = shown(NULLABLE_TIME)

    @cached_property
    def chain(self) -> states.Chain:
        """The stored chain, parsed (once: a boot asks several times)."""
        return states.parse_chain(self.state)

    @property
    def current(self) -> str:
        """The state the machine boots now."""
        return states.current(self.chain)

    @property
    def failed(self) -> bool:
        """Whether the deadline check flagged it (it waits for a retry)."""
        return self.failed_at is not None

    @classmethod
    def of(cls, host: Host) -> "HostRecord":
        """The record of an ORM host."""
        return cls.from_row([getattr(host, name) for name in _NAMES], tuple(host.mac_list))

    @classmethod
    def from_row(cls, row, macs: tuple[str, ...]) -> "HostRecord":
        """The record of a row of ``COLUMNS`` as the driver returned it (SQLite hands over text)."""
        found = list(row)
        if len(found) != len(_NAMES):
            raise ValueError(f"a host row has {len(_NAMES)} columns, not {len(found)}")
        for index, decode in _DECODERS:
            found[index] = decode(found[index])
        # Every boot reads a record: filled at once rather than through the frozen dataclass's
        # __init__, which sets each field with object.__setattr__ (most of the cost of a record).
        # The columns and the MACs are all its fields (checked below the class).
        record = cls.__new__(cls)
        values = record.__dict__
        values.update(zip(_NAMES, found, strict=True))
        values["macs"] = macs
        return record

    def template_values(self) -> list[tuple[str, object]]:
        """(key, value) of the fields declared ``template`` beyond those templates always had."""
        return [(key, getattr(self, name)) for key, name in TEMPLATE_FIELDS]

    def document(self) -> dict:
        """The host as JSON, each field as it declares (never the BMC password)."""
        doc: dict = {}
        for name, key, show in _SHOWN:
            value = getattr(self, name)
            if show is not None:
                doc.update(show(self))
            else:
                doc[key] = _time(value) if isinstance(value, datetime) else (
                    list(value) if isinstance(value, tuple) else value)
        return doc


def schema_properties() -> dict:
    """The OpenAPI properties of ``HostRecord.document``."""
    properties: dict = {}
    for f in fields(HostRecord):
        schema = f.metadata["schema"]
        if schema is None:
            continue
        properties.update(schema if f.metadata["show"] is not None else {f.metadata["name"] or f.name: schema})
    return properties


def _columns() -> list[tuple[str, ColumnElement[Any]]]:
    """(record field, table column) for every record field that is a column of ``hosts``."""
    wanted = {f.name for f in fields(HostRecord)}
    return [(attr.key, attr.columns[0]) for attr in inspect(Host).column_attrs if attr.key in wanted]


def _json(value):
    """A JSON column's value: SQLite hands over text (most often an empty object), PostgreSQL the object."""
    if isinstance(value, str):
        value = {} if value == "{}" else load_stored_json(value)
    return value or {}


def _utc(value):
    """A time column's value, timezone-aware: SQLite hands over text, naive."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _decoder(column):
    """How a driver's value of ``column`` becomes the record's; None: as it is."""
    if isinstance(column.type, JSON):
        return _json
    if isinstance(column.type, UTCDateTime):
        return _utc
    return None


COLUMNS = _columns()
_NAMES = [name for name, _ in COLUMNS]
# Only the columns whose driver values need decoding, by position in a row: every boot reads a record.
_DECODERS = [(index, decode) for index, (_, column) in enumerate(COLUMNS) if (decode := _decoder(column)) is not None]
if {f.name for f in fields(HostRecord)} != {*_NAMES, "macs"}:  # from_row fills every field, and only those
    raise TypeError("every field of HostRecord but macs must be a column of hosts")
# Read once rather than on every boot: (JSON key, field) of the fields templates see beyond the
# original's, and (field, JSON key, show) of every field for ``HostRecord.document``.
TEMPLATE_FIELDS = tuple((f.metadata["name"] or f.name, f.name) for f in fields(HostRecord) if f.metadata["template"])
_SHOWN = tuple((f.name, f.metadata["name"] or f.name, f.metadata["show"]) for f in fields(HostRecord))
