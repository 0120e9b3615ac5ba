// The contract of abiquo-aim, the agent on KVM and Xen hosts.
// abiquo-dc loads this file with thriftpy2 to be its client: change it compatibly
// (new optional fields and new methods only) or raise the version it reports.

namespace py aim

const string CONTRACT_VERSION = "1"

struct AgentInfo {
    1: required string version
    2: required string contractVersion
    3: required string hostname
    4: required string libvirtUri
}

service Aim {
    // Who answers here: the DC's hypervisor probe calls this first.
    AgentInfo getAgentInfo()
}
