"""edge3d.timing.rpc.parse_address: the tracker given to `bench --rpc HOST:PORT`."""

from __future__ import annotations

import pytest

from edge3d.errors import InputError
from edge3d.timing.rpc import parse_address


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:9190", ("127.0.0.1", 9190)),
    ("tracker.lab:9000", ("tracker.lab", 9000)),
    ("localhost:0", ("localhost", 0)),
    ("fe80::1:9190", ("fe80::1", 9190)),  # the port is what follows the last colon
])
def test_good_addresses(text, address):
    host, port = parse_address(text)
    assert (host, port) == address and isinstance(port, int)


@pytest.mark.parametrize("text", ["", "9190", ":9190", "127.0.0.1", "127.0.0.1:", "127.0.0.1:port",
                                  "127.0.0.1:-1", "127.0.0.1:91.5", "127.0.0.1: 9190"])
def test_bad_addresses_say_what_to_give(text):
    with pytest.raises(InputError) as caught:
        parse_address(text)
    assert str(caught.value) == f"--rpc {text!r}: give the tracker as HOST:PORT, e.g. 127.0.0.1:9190"
    assert caught.value.exit_code == 2
