"""The password file Xvnc checks VNC authentication against, written the way `vncpasswd -f`
writes it, so the broker can hand each console ticket a fresh password without a subprocess.

Xvnc reads this file again at every VNC authentication, so replacing it changes the password
for the next connection while consoles already open stay connected.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from broker.sessionhost.files import write_private_file

# The fixed key every VNC implementation obfuscates stored passwords with (d3des "fixedkey").
_FIXED_KEY = bytes([23, 82, 107, 6, 35, 78, 88, 7])
# VNC's DES uses each key byte with its bits reversed (the same quirk as VNC authentication).
_DES_KEY = bytes(int(f"{b:08b}"[::-1], 2) for b in _FIXED_KEY)
MAX_PASSWORD_LENGTH = 8  # VNC authentication only ever uses the first eight bytes


def obfuscate_vnc_password(password: str) -> bytes:
    """The eight bytes `vncpasswd -f` writes for this password."""
    if not password:
        raise ValueError("a VNC password must not be empty")
    if not password.isascii() or "\n" in password:
        # The gateway (broker/console/rfb.py) encodes as latin-1, vncpasswd takes raw UTF-8:
        # only ASCII means the same bytes to both.
        raise ValueError("a VNC password must be ASCII without newlines")
    plain = password.encode("ascii")[:MAX_PASSWORD_LENGTH].ljust(MAX_PASSWORD_LENGTH, b"\0")
    # Triple DES with three equal keys is single DES.
    encryptor = Cipher(TripleDES(_DES_KEY * 3), modes.ECB()).encryptor()
    return encryptor.update(plain) + encryptor.finalize()


def password_file_digest(password: str) -> str:
    """What identifies a password file's content without holding the password: the broker
    sends this (not the password) when it asks for a ticket's password to be expired."""
    import hashlib

    return hashlib.sha256(obfuscate_vnc_password(password)).hexdigest()


def write_vnc_password_file(path: str, password: str, *, uid: int, gid: int) -> None:
    """Replace the file at `path` atomically (mode 0600, owned by uid:gid).

    Xvnc runs as the session's account and must read the file; nobody else may. Atomic, so
    Xvnc never reads a half-written file, even when a console authenticates at that moment.
    """
    write_private_file(path, obfuscate_vnc_password(password), uid=uid, gid=gid, mode=0o600)
