from .audit import AuditEvent
from .directory import DirectoryAccount, DirectoryGroup
from .passkeys import PasskeyDevice
from .sync_runs import DirectorySyncRun
from .throttle import KnownLoginAddress, LoginFailure, LoginLockout

__all__ = [
    "AuditEvent",
    "DirectoryAccount",
    "DirectoryGroup",
    "DirectorySyncRun",
    "KnownLoginAddress",
    "LoginFailure",
    "LoginLockout",
    "PasskeyDevice",
]
