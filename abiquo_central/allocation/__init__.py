"""Where a VM runs: `allocate` picks a machine and a datastore and claims them; this
package is the allocator's one way in, so that a fuller one (rules, fit policies,
overcommit) can replace what is inside without its callers changing."""

from abiquo_central.allocation.allocator import (
    Allocation,
    NoRoom,
    allocate,
    claim_more,
    deallocate,
    release,
)

__all__ = ["Allocation", "NoRoom", "allocate", "claim_more", "deallocate", "release"]
