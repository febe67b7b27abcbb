"""Just enough of the SPICE link protocol for the gateway to know which channel a websocket
carries: the client's first message is a SpiceLinkHeader plus a SpiceLinkMess."""

from __future__ import annotations

import struct

MAGIC = b"REDQ"
MAJOR_VERSION = 2
HEADER = struct.Struct("<4sIII")  # magic, major, minor, size of the SpiceLinkMess that follows
LINK_MESS_PREFIX = struct.Struct("<IBB")  # connection id, channel type, channel id
MAX_LINK_MESS = 4096

CHANNEL_MAIN = 1
CHANNEL_DISPLAY = 2
CHANNEL_INPUTS = 3
CHANNEL_CURSOR = 4
CHANNEL_PLAYBACK = 5
# What spice-html5 opens for one console; each at most once per ticket.
ADMITTED_CHANNELS = frozenset({CHANNEL_MAIN, CHANNEL_DISPLAY, CHANNEL_INPUTS, CHANNEL_CURSOR, CHANNEL_PLAYBACK})
BYTES_NEEDED = HEADER.size + LINK_MESS_PREFIX.size


class NotSpice(Exception):
    pass


def link_channel_type(data: bytes) -> int | None:
    """The channel type a client's link message asks for; None while more bytes are needed."""
    if len(data) < BYTES_NEEDED:
        if not MAGIC.startswith(data[:4]):
            raise NotSpice("not a SPICE link message")
        return None
    magic, major, _minor, size = HEADER.unpack_from(data)
    if magic != MAGIC or major != MAJOR_VERSION or not LINK_MESS_PREFIX.size <= size <= MAX_LINK_MESS:
        raise NotSpice("not a SPICE link message")
    _connection_id, channel_type, _channel_id = LINK_MESS_PREFIX.unpack_from(data, HEADER.size)
    return channel_type
