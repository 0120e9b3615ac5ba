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
    UniqueConstraint,
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

# The resources enterprises are limited in, with their columns' type: CPUs, RAM in MB,
# disk, storage and repository in bytes (beyond 32 bits, hence BigInteger), VLANs and
# public IPs as counts.
LIMITED: tuple[tuple[str, type[Integer]], ...] = (
    ("cpu", Integer),
    ("ram", Integer),
    ("hd", BigInteger),
    ("storage", BigInteger),
    ("repository", BigInteger),
    ("vlans", Integer),
    ("public_ips", Integer),
)

enterprise = Table(
    "enterprise",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("is_reservation_restricted", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Allocation limits (LIMITED), soft then hard, 0 meaning unlimited. The server
    # default lets rows that predate them read as unlimited.
    *(
        Column(f"{resource}_{bound}", kind, nullable=False, default=0, server_default="0")
        for resource, kind in LIMITED
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
    # A blocked role cannot be modified or deleted (CLOUD_ADMIN is).
    Column("blocked", Boolean, nullable=False, default=False, server_default="0"),
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
    # ABIQUO (the password above) or LDAP.
    Column("auth_type", String(16), nullable=False, default="ABIQUO", server_default="ABIQUO"),
    # Abiquo's availableVirtualDatacenters: VDC ids separated by commas; "" for all.
    Column("available_vdcs", String(1024), nullable=False, default="", server_default=""),
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
    # The DC process's own UUID, learnt from its VIRTUAL_FACTORY remote service's check:
    # NULL until one is registered. Messages reach the DC by it.
    Column("uuid", String(36), nullable=True, unique=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("location", String(255), nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    # Its template repository's file system, as its Appliance Manager last measured it
    # (RepositoryUsage) at repository_usage_at: 0 and NULL until it reported.
    Column("repository_capacity_bytes", BigInteger, nullable=False, default=0, server_default="0"),
    Column("repository_free_bytes", BigInteger, nullable=False, default=0, server_default="0"),
    Column("repository_usage_at", UtcDateTime, nullable=True),
)

# The remote services registered for a datacenter: one of each type, at its URI, with
# what the last check of it found.
remote_service = Table(
    "remote_service",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "datacenter_id",
        Integer,
        ForeignKey("datacenter.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # VIRTUAL_FACTORY, VIRTUAL_SYSTEM_MONITOR, NODE_COLLECTOR, ...
    Column("type", String(32), nullable=False),
    Column("uri", String(1024), nullable=False),
    # 1 when the last check found it answering, 0 otherwise.
    Column("status", Integer, nullable=False, default=0),
    Column("checked_at", UtcDateTime, nullable=True),
    UniqueConstraint("datacenter_id", "type"),
)

rack = Table(
    "rack",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("datacenter_id", Integer, ForeignKey("datacenter.id"), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("short_description", String(255), nullable=False, default=""),
    Column("long_description", String(1024), nullable=False, default=""),
    # The VLAN tags the rack's VDC networks are given from, both included...
    Column("vlan_id_min", Integer, nullable=False),
    Column("vlan_id_max", Integer, nullable=False),
    # ...except these, as Abiquo writes them: "5, 10-20".
    Column("vlans_id_avoided", String(1024), nullable=False, default=""),
    Column("vlan_per_vdc_reserved", Integer, nullable=False, default=1),
    # Abiquo's "network reserve security quotient": the percentage of tags kept back.
    Column("nrsq", Integer, nullable=False, default=10),
    Column("ha_enabled", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("datacenter_id", "name"),
)

# A hypervisor host. Its datacenter is its rack's, repeated so that the allocator and
# the listings of a datacenter's machines need no join.
machine = Table(
    "machine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("datacenter_id", Integer, ForeignKey("datacenter.id"), nullable=False),
    Column("rack_id", Integer, ForeignKey("rack.id"), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("description", String(1024), nullable=False, default=""),
    # Where the hypervisor (or its AIM) answers, and where central's services reach it.
    Column("ip", String(64), nullable=False),
    Column("ip_service", String(64), nullable=False, default=""),
    # The HypervisorType's name.
    Column("type", String(32), nullable=False, index=True),
    Column("port", Integer, nullable=False, default=0),
    Column("user", String(255), nullable=False, default=""),
    # The hypervisor's password, encrypted (abiquo_central.secrets); "" for none.
    Column("password_secret", Text, nullable=False, default=""),
    # Abiquo's MachineState: MANAGED, STOPPED, NOT_MANAGED, ...
    Column("state", String(32), nullable=False),
    # Virtual CPUs and RAM (MB) the allocator may hand out, and what it has handed out.
    Column("cpu", Integer, nullable=False),
    Column("ram", Integer, nullable=False),
    Column("cpu_used", Integer, nullable=False, default=0),
    Column("ram_used", Integer, nullable=False, default=0),
    # The NIC the VMs' VLANs are made on.
    Column("virtual_switch", String(255), nullable=False, default=""),
    Column("initiator_iqn", String(255), nullable=False, default=""),
    # The enterprise it is kept for; NULL: anyone's.
    Column(
        "reserved_enterprise_id", Integer, ForeignKey("enterprise.id"), nullable=True, index=True
    ),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("datacenter_id", "ip"),
)

datastore = Table(
    "datastore",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("machine_id", Integer, ForeignKey("machine.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    # Where it is mounted on the host, and the directory under it that VM disks go to.
    Column("root_path", String(1024), nullable=False),
    Column("directory", String(1024), nullable=False, default=""),
    Column("size", BigInteger, nullable=False),
    Column("used_size", BigInteger, nullable=False, default=0),
    # Only enabled datastores receive disks.
    Column("enabled", Boolean, nullable=False, default=False),
    # Shared storage shows the same uuid on every host that mounts it.
    Column("datastore_uuid", String(255), nullable=False, default=""),
    UniqueConstraint("machine_id", "name"),
)

# An enterprise's allocation limits in one datacenter (the enterprise's own apply across
# all of them); 0 is unlimited, as there.
enterprise_limit = Table(
    "enterprise_limit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("enterprise_id", Integer, ForeignKey("enterprise.id"), nullable=False),
    Column("datacenter_id", Integer, ForeignKey("datacenter.id"), nullable=False, index=True),
    *(
        Column(f"{resource}_{bound}", kind, nullable=False, default=0, server_default="0")
        for resource, kind in LIMITED
        for bound in ("soft", "hard")
    ),
    UniqueConstraint("enterprise_id", "datacenter_id"),
)

# Template categories (/config/categories).
category = Table(
    "category",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    # Whether administrators may delete it; the default one may not be.
    Column("erasable", Boolean, nullable=False, default=True),
    Column("is_default", Boolean, nullable=False, default=False),
)

# System properties (/config/properties): settings administrators change at run time.
system_property = Table(
    "system_property",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Column("description", String(1024), nullable=False, default=""),
)

# A VM template in an enterprise's repository of a datacenter, as the datacenter's
# Appliance Manager reported it (TemplateStatusChanged). ovf_id is the AM's id for it.
virtual_machine_template = Table(
    "virtual_machine_template",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("enterprise_id", Integer, ForeignKey("enterprise.id"), nullable=False),
    Column("datacenter_id", Integer, ForeignKey("datacenter.id"), nullable=False, index=True),
    Column("ovf_id", String(1024), nullable=False),
    # A hash of ovf_id: an index on a 1024-character column exceeds MySQL's key length.
    Column("ovf_key", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, default=""),
    # The AM's status: DOWNLOADING, DOWNLOAD, ERROR, NOT_DOWNLOAD...
    Column("state", String(32), nullable=False),
    Column("progress", Integer, nullable=False, default=0),
    Column("error", Text, nullable=False, default=""),
    # The disk: relative to the repository, its format as qemu-img found it, sizes.
    Column("disk_path", String(1024), nullable=False, default=""),
    Column("disk_format", String(32), nullable=False, default="UNKNOWN"),
    Column("disk_file_size", BigInteger, nullable=False, default=0),
    Column("hd_required", BigInteger, nullable=False, default=0),
    Column("cpu_required", Integer, nullable=False, default=1),
    Column("ram_required", Integer, nullable=False, default=256),
    Column("category_id", Integer, ForeignKey("category.id"), nullable=True),
    Column("icon_url", String(1024), nullable=False, default=""),
    Column("cost_code", Integer, nullable=False, default=0),
    # Shared with every enterprise (Abiquo's public templates).
    Column("shared", Boolean, nullable=False, default=False),
    Column("creation_user", String(128), nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    # An instance (a copy of a virtual machine's disk): the template that VM was made from.
    Column(
        "master_id",
        Integer,
        ForeignKey("virtual_machine_template.id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    UniqueConstraint("enterprise_id", "datacenter_id", "ovf_key"),
)

# A template's disk converted to another format by the datacenter's BPM.
template_conversion = Table(
    "template_conversion",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "template_id",
        Integer,
        ForeignKey("virtual_machine_template.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("target_format", String(32), nullable=False),
    # ConversionState: QUEUED, STARTED, FINISHED, FAILED...
    Column("state", String(32), nullable=False),
    Column("path", String(1024), nullable=False, default=""),
    Column("size", BigInteger, nullable=False, default=0),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("template_id", "target_format"),
)

# A virtual datacenter: an enterprise's share of one datacenter, of one hypervisor type,
# with its own limits (LIMITED, 0 unlimited; the repository's do not apply).
virtual_datacenter = Table(
    "virtual_datacenter",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("enterprise_id", Integer, ForeignKey("enterprise.id"), nullable=False, index=True),
    Column("datacenter_id", Integer, ForeignKey("datacenter.id"), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("hypervisor_type", String(32), nullable=False),
    *(
        Column(f"{resource}_{bound}", kind, nullable=False, default=0, server_default="0")
        for resource, kind in LIMITED
        if resource != "repository"
        for bound in ("soft", "hard")
    ),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("enterprise_id", "name"),
)

# A VDC's private network: one VLAN. Its tag is unique in its datacenter, so that a VM
# of the VDC finds its network whichever rack it lands on; the unique key is what makes
# two concurrent VDC creations take different tags.
vlan = Table(
    "vlan",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "vdc_id",
        Integer,
        ForeignKey("virtual_datacenter.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("datacenter_id", Integer, ForeignKey("datacenter.id"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("tag", Integer, nullable=False),
    Column("address", String(45), nullable=False),
    # The prefix length (24 for 255.255.255.0).
    Column("mask", Integer, nullable=False),
    Column("gateway", String(45), nullable=False),
    Column("primary_dns", String(45), nullable=False, default=""),
    Column("secondary_dns", String(45), nullable=False, default=""),
    Column("sufix_dns", String(255), nullable=False, default=""),
    Column("is_default", Boolean, nullable=False, default=False),
    # INTERNAL (private); EXTERNAL and PUBLIC come with public networks.
    Column("type", String(16), nullable=False, default="INTERNAL"),
    UniqueConstraint("datacenter_id", "tag"),
    UniqueConstraint("vdc_id", "name"),
)

# The addresses of a network, made when it is; a NIC is an address given to a VM.
ip = Table(
    "ip",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vlan_id", Integer, ForeignKey("vlan.id", ondelete="CASCADE"), nullable=False),
    Column("ip", String(45), nullable=False),
    # Unique everywhere: the prefix is the hypervisor type's (KVM 52:54:00, ...).
    Column("mac", String(17), nullable=False, unique=True),
    Column("name", String(128), nullable=False, default=""),
    Column("quarantine", Boolean, nullable=False, default=False),
    # The VM it is a NIC of (NULL: available), and its place among the VM's NICs.
    Column(
        "virtual_machine_id",
        Integer,
        ForeignKey("virtual_machine.id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    Column("nic_order", Integer, nullable=True),
    UniqueConstraint("vlan_id", "ip"),
)

virtual_appliance = Table(
    "virtual_appliance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vdc_id", Integer, ForeignKey("virtual_datacenter.id"), nullable=False, index=True),
    Column("enterprise_id", Integer, ForeignKey("enterprise.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("high_disponibility", Boolean, nullable=False, default=False),
    Column("public_app", Boolean, nullable=False, default=False),
    Column("nodeconnections", Text, nullable=False, default=""),
    Column("error", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# A VM: what it is made of, where it runs once allocated, and its state (API.md's).
# While a task runs on it, state is LOCKED and locked_state what it was before.
virtual_machine = Table(
    "virtual_machine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("vapp_id", Integer, ForeignKey("virtual_appliance.id"), nullable=False, index=True),
    Column("vdc_id", Integer, ForeignKey("virtual_datacenter.id"), nullable=False),
    Column("enterprise_id", Integer, ForeignKey("enterprise.id"), nullable=False, index=True),
    Column("template_id", Integer, ForeignKey("virtual_machine_template.id"), nullable=False),
    # The name on the hypervisor (ABQ_<uuid>) and the one users give it.
    Column("name", String(64), nullable=False),
    Column("label", String(255), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("cpu", Integer, nullable=False),
    Column("ram", Integer, nullable=False),
    Column("hd_bytes", BigInteger, nullable=False, default=0),
    Column("state", String(16), nullable=False, index=True),
    Column("locked_state", String(16), nullable=True),
    # Where it is allocated; NULL while NOT_ALLOCATED.
    Column("machine_id", Integer, ForeignKey("machine.id"), nullable=True, index=True),
    Column("datastore_id", Integer, ForeignKey("datastore.id"), nullable=True),
    Column("vdrp_ip", String(45), nullable=False, default=""),
    Column("vdrp_port", Integer, nullable=False, default=0),
    Column("password", String(255), nullable=False, default=""),
    Column("high_disponibility", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# An asynchronous action on a VM, and its jobs (API.md's task and job). A job's id is
# "<task id>.<job uuid>".
task = Table(
    "task",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "virtual_machine_id",
        Integer,
        ForeignKey("virtual_machine.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("user_id", Integer, nullable=True),
    Column("enterprise_id", Integer, nullable=False),
    Column("type", String(16), nullable=False),
    Column("state", String(32), nullable=False, index=True),
    # What finishing or undoing it needs that the VM no longer holds (a RECONFIGURE's
    # values from before, put back if it fails).
    Column("payload", JsonText, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    # When it last heard anything: a task without news for long is asked about.
    Column("updated_at", UtcDateTime, nullable=False, index=True),
)

job = Table(
    "job",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("task_id", String(36), ForeignKey("task.id", ondelete="CASCADE"), nullable=False),
    # Its place in the task.
    Column("sequence", Integer, nullable=False),
    Column("type", String(16), nullable=False),
    Column("state", String(32), nullable=False),
    Column("rollback_state", String(32), nullable=False, default="UNKNOWN"),
    Column("description", String(1024), nullable=False, default=""),
    Column("error", Text, nullable=False, default=""),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("task_id", "sequence"),
)

# Messages to datacenters written in the transaction that decided them and sent after
# its commit: a crash between the two sends them at the next start, never loses them.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dc_uuid", String(36), nullable=False),
    Column("service", String(32), nullable=False),
    # The message, encoded by abiquo_dc.protocol.codec; its own id dedupes a re-send.
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True, index=True),
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
    "category",
    "datacenter",
    "datacenter_liveness",
    "datastore",
    "enterprise",
    "enterprise_limit",
    "event",
    "ip",
    "job",
    "machine",
    "metadata",
    "outbox",
    "rack",
    "remote_service",
    "role",
    "role_privilege",
    "system_property",
    "task",
    "template_conversion",
    "user",
    "virtual_appliance",
    "virtual_datacenter",
    "virtual_machine",
    "virtual_machine_template",
    "vlan",
]
