"""Storage System Manager: iSCSI volumes on the storage servers."""
