"""Every table of abiquo-central, as SQLAlchemy Core.

The migrations under `migrations/versions` create these tables explicitly; a test
compares the migrated schema with this metadata so that the two cannot drift apart.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from abiquo_central.db.types import JsonText, UtcDateTime

# Constraint names are part of the schema that migrations alter later: a convention
# keeps them predictable on every backend instead of letting each database invent them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

enterprise = Table(
    "enterprise",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("is_reservation_restricted", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Allocation limits, soft then hard, 0 meaning unlimited: CPUs, RAM in MB, disk,
    # storage and repository in bytes (beyond 32 bits, hence BigInteger), VLANs and
    # public IPs as counts. The server default lets rows that predate them read as
    # unlimited.
    *(
        Column(f"{resource}_{bound}", kind, nullable=False, default=0, server_default="0")
        for resource, kind in (
            ("cpu", Integer),
            ("ram", Integer),
            ("hd", BigInteger),
            ("storage", BigInteger),
            ("repository", BigInteger),
            ("vlans", Integer),
            ("public_ips", Integer),
        )
        for bound in ("soft", "hard")
    ),
)

role = Table(
    "role",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    # NULL for the roles every enterprise can use (the seeded ones among them).
    Column("enterprise_id", Integer, ForeignKey("enterprise.id"), nullable=True),
)

role_privilege = Table(
    "role_privilege",
    metadata,
    Column("role_id", Integer, ForeignKey("role.id", ondelete="CASCADE"), primary_key=True),
    Column("privilege", String(64), primary_key=True),
)

user = Table(
    "user",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("enterprise_id", Integer, ForeignKey("enterprise.id"), nullable=False),
    Column("role_id", Integer, ForeignKey("role.id"), nullable=False),
    Column("nick", String(128), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("surname", String(128), nullable=False, default=""),
    Column("email", String(255), nullable=False, default=""),
    # argon2 PHC string: parameters and salt travel with the hash.
    Column("password_hash", String(255), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("locale", String(16), nullable=False, default="en_US"),
    Column("created_at", UtcDateTime, nullable=False),
)

# Session tokens issued by GET /api/login. Only a token's SHA-256 is kept: whoever reads
# the table (a backup, a replica) cannot use what they read. In the database, not in a
# process, so that every central process behind the balancer accepts every token.
session_token = Table(
    "session_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "user_id", Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=False),
    # The earlier of last use + the idle lifetime and creation + the absolute one.
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# Failed logins, counted per nick ("nick:<nick>") and per client address ("addr:<ip>"),
# shared by every central process so that spreading guesses over them gains nothing.
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UtcDateTime, nullable=False),
    Column("blocked_until", UtcDateTime, nullable=True),
)

datacenter = Table(
    "datacenter",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("location", String(255), nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
)

# What central last heard from each datacenter process. Keyed by the DC's uuid and kept
# apart from `datacenter`, so that a DC heard before an administrator registered it is
# remembered and shows as available as soon as it is registered.
datacenter_liveness = Table(
    "datacenter_liveness",
    metadata,
    Column("dc_uuid", String(36), primary_key=True),
    Column("name", String(255), nullable=False),
    # started_at tells one run of the DC process from the next; sequence counts within a run.
    Column("started_at", UtcDateTime, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("http_url", String(1024), nullable=False),
    # {"virtualfactory": "RUNNING", "am": "RETRYING", ...}
    Column("services", JsonText, nullable=False),
)

# The event log. Users, enterprises and datacenters are referred to by id *and* name,
# without foreign keys: an event outlives what it is about (a deleted user's logins
# must still read as theirs), and a failed login names a nick that matches no user.
event = Table(
    "event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("timestamp", UtcDateTime, nullable=False, index=True),
    # Abiquo's SeverityType, ComponentType and EventType names.
    Column("severity", String(16), nullable=False, index=True),
    Column("component", String(32), nullable=False, index=True),
    Column("action", String(64), nullable=False, index=True),
    Column("user_id", Integer, nullable=True, index=True),
    Column("user_name", String(128), nullable=True),
    Column("enterprise_id", Integer, nullable=True, index=True),
    Column("enterprise_name", String(128), nullable=True),
    Column("datacenter_id", Integer, nullable=True, index=True),
    Column("virtual_machine_id", Integer, nullable=True),
    # What the event is about: its URI under the API, or its name.
    Column("target", String(1024), nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
)

__all__ = [
    "datacenter",
    "datacenter_liveness",
    "enterprise",
    "event",
    "metadata",
    "role",
    "role_privilege",
    "user",
]
