"""The Appliance Manager's errors, each a member of the shared taxonomy with a stable code.

Which family an error belongs to decides what happens to a download's partial files:
a TemporaryError (the server went away, a timeout) keeps them for a resume; anything
else (a bad package, a refusal by the server, a limit) deletes them.
"""

from __future__ import annotations

from abiquo_runtime.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PermanentError,
    TemporaryError,
)


class RepositoryUnavailable(TemporaryError):
    """The repository is not mounted (its mark file is missing), or none is configured."""

    code = "AM-REPOSITORY"


class AmNotRunning(TemporaryError):
    code = "AM-STOPPED"


class TemplateNotFound(NotFound):
    code = "AM-TEMPLATE-NOT-FOUND"


class TemplateConflict(Conflict):
    code = "AM-TEMPLATE-CONFLICT"


class BadPackage(InvalidInput):
    """The package arrived but is not what it claims: the HTTP edge answers 422."""

    code = "AM-PACKAGE"


class DiskMissing(BadPackage):
    code = "AM-DISK-MISSING"


class DiskSizeMismatch(BadPackage):
    code = "AM-DISK-SIZE"


class DiskFormatMismatch(BadPackage):
    code = "AM-DISK-FORMAT"


class ChecksumMismatch(BadPackage):
    code = "AM-CHECKSUM"


class UnsafeDisk(BadPackage):
    """A disk image that reaches outside itself (a backing file, an external extent)."""

    code = "AM-DISK-UNSAFE"


class TooBig(LimitExceeded):
    code = "AM-TOO-BIG"


class BadUpload(InvalidInput):
    code = "AM-UPLOAD"


class BadUrl(InvalidInput):
    code = "AM-URL"


class CatalogueNotAllowed(InvalidInput):
    code = "AM-CATALOGUE-NOT-ALLOWED"


class RemoteRefused(PermanentError):
    """The remote server answered with an error that asking again will not change."""

    code = "AM-REMOTE"


class RemoteNotFound(RemoteRefused):
    code = "AM-REMOTE-NOT-FOUND"


class DownloadInterrupted(TemporaryError):
    """The connection dropped, timed out or the server failed for now: resume later."""

    code = "AM-DOWNLOAD-INTERRUPTED"


class ToolFailed(PermanentError):
    """qemu-img is missing or failed for a reason that is not the disk's."""

    code = "AM-QEMU-IMG"
