"""abiquo-aim: the agent on KVM and Xen hosts, a thrift server over libvirt.

It imports nothing from abiquo_dc or abiquo_central: it is installed alone on hosts.
"""

__version__ = "0.1.0"
