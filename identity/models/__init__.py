from .audit import AuditEvent
from .directory import DirectoryAccount, DirectoryGroup
from .oidc import OidcIdentity, OidcLoginSession, OidcLogoutToken
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
    "OidcIdentity",
    "OidcLoginSession",
    "OidcLogoutToken",
]
