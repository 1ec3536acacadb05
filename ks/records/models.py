"""Database models (SQLAlchemy 2.0, typed). Schema changes go through migrations/."""

from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so that migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; SQLite only autoincrements a column declared INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use ks.records.models.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # Every model maps one plain table (never a join or a subquery): the boot
    # path and the history writer build INSERT and UPDATE statements on it.
    __table__: ClassVar[Table]


class Host(Base):
    """One physical machine."""

    __tablename__ = "hosts"
    # AUTOINCREMENT: SQLite never hands out the id of a deleted host again.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), default="not-set")
    serial: Mapped[str | None] = mapped_column(String(128), unique=True)
    uuid: Mapped[str | None] = mapped_column(String(36), unique=True)
    state: Mapped[str] = mapped_column(String(1100))
    meta: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    # What the firmware reported at the last boot (SMBIOS, architecture, platform).
    facts: Mapped[dict] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    # The operator's key=value tags, for selectors and enrollment rules.
    labels: Mapped[dict] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    # SHA-256 of the current bootid; the secret itself is never stored.
    bootid_hash: Mapped[str | None] = mapped_column(String(64))
    # Whether the current bootid already advanced the chain (a retried /finish).
    boot_finished: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_boot_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The network address of the last boot: an installer that downloads its
    # image from the same address (one DHCP lease per MAC) is this machine.
    boot_address: Mapped[str | None] = mapped_column(String(45), index=True)
    # Baseboard management controller, in the Metal3/Ironic URL convention
    # (ipmi://host:port, redfish://host/redfish/v1/Systems/1, ...).
    bmc_address: Mapped[str | None] = mapped_column(String(512))
    bmc_username: Mapped[str | None] = mapped_column(String(255))
    # A Fernet token (ks.core.vault) of a password of at most 255 bytes.
    bmc_password: Mapped[str | None] = mapped_column(String(1024))
    # When the image being installed must have called /finish: set by its first
    # boot, cleared by /finish, a new state or a retry. Indexed for the check.
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # When the check found the deadline passed; such a host waits for a retry.
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How far the current boot got (ks.core.progress): bytes of the image's disk sent so
    # far and its size (written every few seconds or 10 %), and when the installed
    # system fetched its post-install script. Every boot resets them.
    download_sent: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    download_size: Mapped[int | None] = mapped_column(BigInteger)
    post_install_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When an operator last set the chain: until the next boot the host waits for it.
    chain_set_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    macs: Mapped[list["HostMac"]] = relationship(
        back_populates="host", order_by="HostMac.position", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def mac_list(self) -> list[str]:
        """The host's MACs, first one first."""
        return [m.mac for m in self.macs]


class HostMac(Base):
    """A MAC address of a host; each MAC belongs to at most one host."""

    __tablename__ = "host_macs"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    host: Mapped[Host] = relationship(back_populates="macs")


class Event(Base):
    """One line of a host's history: a boot, state change, finish, update or conflict."""

    __tablename__ = "events"
    # AUTOINCREMENT: SQLite never hands out the id of a deleted event again, so a reader's
    # cursor (an event stream's Last-Event-ID, a webhook's) never skips a new event.
    __table_args__ = (Index("ix_events_host_id_id", "host_id", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(1100))
    to_state: Mapped[str | None] = mapped_column(String(1100))
    source: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class RuleSequence(Base):
    """The last ``seq`` an enrollment rule gave (``ks.core.rules``): rule names start at 1 and never repeat a number."""

    __tablename__ = "rule_sequences"

    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    last: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


class ApiToken(Base):
    """A bearer token for the admin API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # viewer, operator or admin (ks.core.roles); tokens made before roles existed are admin.
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Counted up by each dashboard logout with this token: a session started at another count is over.
    sessions_ended: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class Webhook(Base):
    """A receiver of history events: a URL, the kinds it wants, its secret, how far it got."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Comma-separated event kinds (ks.records.events.EventKind values); empty: every kind.
    kinds: Mapped[str] = mapped_column(String(255), default="")
    # A Fernet token (ks.core.vault) of the secret that signs each delivery.
    secret: Mapped[str] = mapped_column(String(1024))
    # The last event id passed: delivered, given up, or of a kind not wanted.
    delivered_id: Mapped[int] = mapped_column(BigInteger, default=0)
    # Failed attempts at the event after delivered_id, and when the next one is due.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One attempt to deliver one event to one webhook: the delivery log."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event_id: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    # The receiver's HTTP status; None when it did not answer.
    status: Mapped[int | None] = mapped_column(Integer)
    # Why the attempt failed ("" when it worked); "gave up" when it was the last one.
    error: Mapped[str] = mapped_column(String(255), default="")


class Lease(Base):
    """Work that one process of all servers sharing the database does at a time, and who holds it until when."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128), default="")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
