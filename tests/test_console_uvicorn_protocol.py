"""The gateway's binary send path writes RFC 6455 frames byte for byte as websockets does."""

import pytest
from websockets.frames import Frame, Opcode

from broker.console.uvicorn_protocol import binary_frame_header


@pytest.mark.parametrize("length", [1, 125, 126, 127, 65535, 65536, 256 * 1024])
def test_its_frame_header_is_the_one_websockets_would_write(length):
    payload = bytes(length)
    expected = Frame(Opcode.BINARY, payload).serialize(mask=False)
    assert binary_frame_header(length) + payload == expected
