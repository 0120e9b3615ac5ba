// The contract of abiquo-aim, the agent on KVM and Xen hosts.
//
// abiquo-dc loads this file with thriftpy2 to be its client. Change it compatibly (new
// optional fields, new methods) or raise CONTRACT_VERSION. Framed transport, binary
// protocol. Domains are addressed by their UUID. Each group of methods raises its own
// exception, with a stable code ("RIMP-3", "VLAN-1", ...) and a message.

namespace py aim

const string CONTRACT_VERSION = "2"

struct AgentInfo {
    1: required string version
    2: required string contractVersion
    3: required string hostname
    4: required string libvirtUri
}

// ---------------------------------------------------------------------------------------
// Disks (Abiquo's "Rimp"): the repository (an NFS mount) and the host's datastores.

exception RimpException {
    1: required string code
    2: required string message
}

struct Datastore {
    1: required string device
    2: required string path
    3: required string type          // the filesystem type: ext4, nfs, xfs, ...
    4: required i64 totalSize         // bytes
    5: required i64 usableSize        // bytes free to an unprivileged writer
}

struct NetInterface {
    1: required string name
    2: required string address        // the first IPv4 address, "" when none
    3: required string macAddress
}

// The progress of a disk copy, for a copy under way or the last one for that VM.
struct CopyProgress {
    1: required string virtualMachineUUID
    2: required i64 copiedBytes
    3: required i64 totalBytes
    4: required bool done
    5: optional string error
}

// ---------------------------------------------------------------------------------------
// VLANs and bridges.

exception VLANException {
    1: required string code
    2: required string message
}

// ---------------------------------------------------------------------------------------
// iSCSI storage.

exception StorageException {
    1: required string code
    2: required string message
}

// ---------------------------------------------------------------------------------------
// libvirt.

// LIBVIRT-UNAVAILABLE: libvirtd is not reachable from the AIM right now (it reconnects by
// itself); LIBVIRT-NOT-FOUND, -INVALID, -STATE, -TIMEOUT, -ERROR: see libvirt_host.py.
exception LibvirtException {
    1: required string code
    2: required string message
}

enum DomainState {
    UNKNOWN = 0,
    RUNNING = 1,
    BLOCKED = 2,
    PAUSED = 3,
    SHUTDOWN = 4,        // shutting down
    SHUTOFF = 5,
    CRASHED = 6,
    PMSUSPENDED = 7
}

struct NodeInfo {
    1: required string hostname
    2: required string hypervisorType     // "QEMU", "Xen", "Test"
    3: required i64 hypervisorVersion     // libvirt's encoding: major * 1000000 + minor * 1000 + release
    4: required i64 libvirtVersion
    5: required string cpuModel
    6: required i64 memoryBytes
    7: required i32 cpus
    8: required i32 mhz
    9: required i32 nodes
    10: required i32 sockets
    11: required i32 cores
    12: required i32 threads
    // The URI the datacenter opens for domain operations (define, list, power), as it
    // reaches this host's libvirtd: "qemu+tcp://<host>/system", "xen+tcp://<host>/system".
    // Empty or absent: they go through this AIM's methods below.
    13: optional string remoteLibvirtUri
}

struct DomainInfo {
    1: required string uuid
    2: required string name
    3: required DomainState state
    4: required i64 maxMemoryBytes
    5: required i64 memoryBytes
    6: required i32 virtualCpus
    7: required i64 cpuTimeNs
    8: required bool persistent
    9: required bool autostart
}

enum StoragePoolType {
    DIR = 1,
    NFS = 2,
    ISCSI = 3
}

struct StoragePool {
    1: required string name
    2: required StoragePoolType type
    3: required string targetPath         // where the pool's volumes appear on this host
    4: optional string sourceHost         // NFS server or iSCSI portal host
    5: optional string sourcePath         // NFS export or iSCSI target IQN
    6: optional i64 capacityBytes         // filled in by getStoragePools
    7: optional i64 availableBytes
}

struct BlockInfo {
    1: required i64 capacityBytes         // what the guest sees
    2: required i64 allocationBytes       // what the host has written
    3: required i64 physicalBytes         // the size of the file or device
}

// ---------------------------------------------------------------------------------------
// Metrics.

exception MetricsException {
    1: required string code
    2: required string message
}

// One sample of a domain's counters; counters are cumulative since the domain started.
struct Datapoint {
    1: required i64 timestamp             // milliseconds since the epoch
    2: required i64 cpuTimeNs
    3: required i64 memoryUsedBytes
    4: required i64 diskReadBytes
    5: required i64 diskWriteBytes
    6: required i64 netRxBytes
    7: required i64 netTxBytes
}

// ---------------------------------------------------------------------------------------
// Lifecycle events, long-polled from a cursor so that a monitor that reconnects loses
// nothing: every event has a sequence number, waitEvents(cursor) returns those after it.

exception EventsException {
    1: required string code
    2: required string message
}

enum EventType {
    CREATED = 1,         // defined
    DESTROYED = 2,       // undefined
    POWER_ON = 3,        // started
    POWER_OFF = 4,       // stopped, shut down or crashed
    PAUSED = 5,          // suspended
    RESUMED = 6,
    SAVED = 7
}

struct DomainEvent {
    1: required i64 sequence
    2: required string domainUuid
    3: required string domainName
    4: required EventType type
    5: required i64 timestamp             // milliseconds since the epoch
}

struct EventBatch {
    1: required list<DomainEvent> events
    // The cursor for the next call: the sequence of the last event returned, or the
    // given cursor when nothing came.
    2: required i64 cursor
    // The cursor is older than the history kept: events were lost to this caller, who
    // must resynchronise (list the domains) and continue from `cursor`.
    3: required bool resync
}

service Aim {
    // Who answers here: the DC's hypervisor probe calls this first.
    AgentInfo getAgentInfo()

    // -- disks ----------------------------------------------------------------------
    // The repository is mounted and carries its mark file; every datastore exists.
    void checkRimpConfiguration() throws (1: RimpException e)
    i64 getDiskFileSize(1: string path) throws (1: RimpException e)
    list<Datastore> getDatastores() throws (1: RimpException e)
    list<NetInterface> getNetInterfaces() throws (1: RimpException e)
    // Where a method takes virtualMachineUUID, it names a VM's disk file: the UUID for
    // its first disk, <uuid>-<n> (n from 1 to 99) for the others.
    // Copies <repository>/<repositoryPath> to <datastorePath>/<virtualMachineUUID>.
    void copyFromRepositoryToDatastore(1: string repositoryPath, 2: string datastorePath,
                                       3: string virtualMachineUUID)
        throws (1: RimpException e)
    void deleteVirtualImageFromDatastore(1: string datastorePath, 2: string virtualMachineUUID)
        throws (1: RimpException e)
    // Copies <datastorePath>/<virtualMachineUUID> to <repository>/<repositoryPath>.
    void copyFromDatastoreToRepository(1: string virtualMachineUUID, 2: string datastorePath,
                                       3: string repositoryPath)
        throws (1: RimpException e)
    // A copy of a disk within the datastores, for an instance of a VM.
    void instanceDisk(1: string sourcePath, 2: string destinationPath)
        throws (1: RimpException e)
    void renameDisk(1: string oldPath, 2: string newPath) throws (1: RimpException e)
    CopyProgress getCopyProgress(1: string virtualMachineUUID) throws (1: RimpException e)

    // -- VLANs ----------------------------------------------------------------------
    // Idempotent: creating what exists and deleting what is absent both succeed.
    void createVLAN(1: i32 vlanTag, 2: string vlanInterface, 3: string bridgeInterface)
        throws (1: VLANException e)
    void deleteVLAN(1: i32 vlanTag, 2: string vlanInterface, 3: string bridgeInterface)
        throws (1: VLANException e)
    void checkVLANConfiguration() throws (1: VLANException e)

    // -- iSCSI ----------------------------------------------------------------------
    string getInitiatorIQN() throws (1: StorageException e)
    void rescanISCSI(1: list<string> targets) throws (1: StorageException e)

    // -- libvirt --------------------------------------------------------------------
    NodeInfo getNodeInfo() throws (1: LibvirtException e)
    // Defines (or redefines) a domain from its XML; returns its UUID.
    string defineDomain(1: string xml) throws (1: LibvirtException e)
    void undefineDomain(1: string uuid) throws (1: LibvirtException e)
    bool existDomain(1: string uuid) throws (1: LibvirtException e)
    DomainState getDomainState(1: string uuid) throws (1: LibvirtException e)
    DomainInfo getDomainInfo(1: string uuid) throws (1: LibvirtException e)
    list<DomainInfo> getDomains() throws (1: LibvirtException e)
    void powerOn(1: string uuid) throws (1: LibvirtException e)
    void powerOff(1: string uuid) throws (1: LibvirtException e)
    void shutdown(1: string uuid) throws (1: LibvirtException e)
    void reset(1: string uuid) throws (1: LibvirtException e)
    void pause(1: string uuid) throws (1: LibvirtException e)
    void resume(1: string uuid) throws (1: LibvirtException e)
    void createStoragePool(1: StoragePool pool) throws (1: LibvirtException e)
    void deleteStoragePool(1: string name) throws (1: LibvirtException e)
    list<StoragePool> getStoragePools() throws (1: LibvirtException e)
    // Creates a volume in a pool; format "raw" or "qcow2"; returns its path.
    string createDisk(1: string pool, 2: string name, 3: i64 capacityBytes, 4: string format)
        throws (1: LibvirtException e)
    void deleteDisk(1: string pool, 2: string name) throws (1: LibvirtException e)
    void resizeVol(1: string pool, 2: string name, 3: i64 capacityBytes)
        throws (1: LibvirtException e)
    // Grows a disk of a domain (running or not) to capacityBytes.
    void resizeDisk(1: string uuid, 2: string diskPath, 3: i64 capacityBytes)
        throws (1: LibvirtException e)
    BlockInfo getDomainBlockInfo(1: string uuid, 2: string diskPath)
        throws (1: LibvirtException e)

    // -- metrics --------------------------------------------------------------------
    // The samples kept for a domain taken after `since` (milliseconds since the epoch).
    list<Datapoint> getDatapoints(1: string uuid, 2: i64 since) throws (1: MetricsException e)

    // -- events ---------------------------------------------------------------------
    // Events after `cursor` (0: from the oldest kept), at most `max`; waits up to
    // timeoutMs for the first one when there is none yet.
    EventBatch waitEvents(1: i64 cursor, 2: i32 max, 3: i32 timeoutMs)
        throws (1: EventsException e)
}
