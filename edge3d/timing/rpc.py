"""Timing a TVM library on a remote board through TVM's RPC tracker (a pool of Jetsons or Arm
boards behind one host). The board measures each run itself (``time_evaluator``), so the
figures leave out the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from ..runtimes.base import IOSpec, Session


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--rpc {text!r}: give the tracker as HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


_BOARDS: dict = {}


def _board(tracker: tuple[str, int], key: str):
    """One session per board for the whole run: the lowered and the original model share it
    (asking the tracker twice would wait for a second free board)."""
    from tvm import rpc

    if (tracker, key) in _BOARDS:
        return _BOARDS[(tracker, key)]
    where = f"{tracker[0]}:{tracker[1]}"
    try:
        client = rpc.connect_tracker(*tracker)
        queues = client.summary().get("queue_info", {})
    except Exception as exc:  # noqa: BLE001 - tvm raises TVMError/ConnectionError/RuntimeError
        raise InputError(f"cannot reach the TVM RPC tracker at {where} ({first_line(exc)})") from None
    queue = queues.get(key, {})
    if not queue.get("free", 0) + queue.get("pending", 0) + queue.get("total", 0):
        known = ", ".join(sorted(queues)) or "none"
        raise InputError(f"the tracker at {where} has no board with key {key!r} (keys: {known})")
    _BOARDS[(tracker, key)] = client.request(key, priority=1, session_timeout=600)
    return _BOARDS[(tracker, key)]


class RemoteTvmSession(Session):
    """A Relax VM on a board; ``timed_run`` returns the board's own measurement in ms. Closing it
    drops its handle on the library loaded on the board; the board's RPC session stays for the
    run's other model."""

    def __init__(self, library: Path, inputs: list[IOSpec], outputs: list[IOSpec], tracker: tuple[str, int],
                 key: str, tag: str):
        import tvm
        from tvm import relax

        self.remote = _board(tracker, key)
        remote_name = f"{tag}.{library.name}"  # one file per model: overwriting a loaded library crashes the board
        self.remote.upload(str(library), target=remote_name)
        self.device = self.remote.cpu()
        self.vm = relax.VirtualMachine(self.remote.load_module(remote_name), self.device)
        self.tvm = tvm
        self.inputs, self.outputs = inputs, outputs
        self.input_names = [v.name for v in inputs]
        self._staged = None

    def _stage(self, feeds: dict) -> None:
        if self._staged is not feeds:
            args = [self.tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), self.device) for n in self.input_names]
            self.vm.set_input("main", *args)
            self._staged = feeds

    def run(self, feeds: dict) -> list[np.ndarray]:
        self._stage(feeds)
        self.vm.invoke_stateful("main")
        out = self.vm.get_outputs("main")
        return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]

    def timed_run(self, feeds: dict) -> float:
        self._stage(feeds)
        result = self.vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=1)("main")
        return float(result.mean) * 1e3

    def close(self) -> None:
        self.vm = self._staged = None
