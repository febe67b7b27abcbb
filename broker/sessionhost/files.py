"""Writing files into directories the session's account owns, without giving it a way to
make root write elsewhere."""

from __future__ import annotations

import os
import tempfile


def write_private_file(path: str, data: bytes, *, uid: int, gid: int, mode: int = 0o600) -> None:
    """Replace `path` atomically with a file owned by uid:gid.

    Safe in a directory the account owns: mkstemp creates a new file (O_EXCL) and os.replace
    renames over whatever is at `path`, a symlink included, without following it. In the same
    directory, so readers see the old file or the new one, never half of one.
    """
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".new-")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            os.fchown(stream.fileno(), uid, gid)
            os.fchmod(stream.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
