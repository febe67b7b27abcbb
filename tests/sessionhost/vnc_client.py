"""Just enough of an RFB 3.8 client to log in to a session's Xvnc with VNC authentication,
as the console gateway does, and to see that the display answers afterwards."""

from __future__ import annotations

import socket
import struct

from broker.console.rfb import vnc_auth_response


class LoginRefused(Exception):
    pass


def _read_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise LoginRefused(f"server closed the connection after {data!r}")
        data += chunk
    return data


def vnc_login(port: int, password: str, *, shared: bool = True, host: str = "127.0.0.1") -> tuple[socket.socket, dict]:
    """Log in and send ClientInit; returns the open connection and the ServerInit's size and
    desktop name. Raises LoginRefused on a wrong password."""
    connection = socket.create_connection((host, port), timeout=10)
    try:
        assert _read_exactly(connection, 12) == b"RFB 003.008\n"
        connection.sendall(b"RFB 003.008\n")
        (count,) = _read_exactly(connection, 1)
        offered = _read_exactly(connection, count)
        if 2 not in offered:
            raise LoginRefused(f"VNC authentication not offered: {list(offered)}")
        connection.sendall(b"\x02")
        connection.sendall(vnc_auth_response(password, _read_exactly(connection, 16)))
        (result,) = struct.unpack(">I", _read_exactly(connection, 4))
        if result != 0:
            (length,) = struct.unpack(">I", _read_exactly(connection, 4))
            raise LoginRefused(_read_exactly(connection, length).decode())
        connection.sendall(b"\x01" if shared else b"\x00")
        width, height = struct.unpack(">HH", _read_exactly(connection, 4))
        _read_exactly(connection, 16)  # pixel format
        (name_length,) = struct.unpack(">I", _read_exactly(connection, 4))
        name = _read_exactly(connection, name_length).decode()
    except BaseException:
        connection.close()
        raise
    return connection, {"width": width, "height": height, "name": name}


def request_full_update(connection: socket.socket, *, width: int, height: int) -> int:
    """Ask for the whole screen and return the message type of the reply (0: a framebuffer
    update): proof that this console is still being served."""
    connection.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    return _read_exactly(connection, 1)[0]


def rfb_banner(port: int, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=5) as connection:
        return _read_exactly(connection, 12)
