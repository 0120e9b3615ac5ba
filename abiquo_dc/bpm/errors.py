"""The BPM's errors: the taxonomy's classes with the stable codes central sees.

A FAILED notification carries `<code>: <message>`; a ConvertDisk request from vfactory
raises the error itself.
"""

from __future__ import annotations

from abiquo_runtime.errors import InvalidInput, NotFound, PermanentError, TemporaryError


class BadFormat(InvalidInput):
    """A format that is unknown, or that the BPM cannot produce."""

    code = "BPM-FORMAT"


class FormatMismatch(InvalidInput):
    """The disk is not in the format its request declares."""

    code = "BPM-FORMAT-MISMATCH"


class BadPath(InvalidInput):
    """A path that is absolute, climbs out, or leads out of the repository."""

    code = "BPM-PATH"


class UnsafeSource(InvalidInput):
    """A disk that would make qemu-img read outside the repository (a backing file, an
    extent elsewhere, an external data file) or that cannot be read (encrypted)."""

    code = "BPM-UNSAFE-SOURCE"


class SourceMissing(NotFound):
    code = "BPM-NOT-FOUND"


class NotMounted(TemporaryError):
    """The repository's mark file is missing: an NFS mount that is not there."""

    code = "BPM-NOT-MOUNTED"


class QemuImgFailed(PermanentError):
    code = "BPM-QEMU-IMG"


class QemuImgMissing(PermanentError):
    code = "BPM-NO-QEMU-IMG"


class VerificationFailed(PermanentError):
    """The converted disk is damaged or does not hold what the source holds."""

    code = "BPM-VERIFY"


class ConversionTimeout(TemporaryError):
    code = "BPM-TIMEOUT"


class Interrupted(PermanentError):
    """Interrupted by a crash a second time: not tried a third."""

    code = "BPM-INTERRUPTED"


class Cancelled(PermanentError):
    code = "BPM-CANCELLED"


class BpmStopped(TemporaryError):
    code = "BPM-STOPPED"


class Unreadable(InvalidInput):
    """qemu-img cannot open the disk at all (a damaged header, no permission)."""

    code = "BPM-UNREADABLE"
