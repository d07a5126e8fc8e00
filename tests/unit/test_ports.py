"""free_port never hands the same port out twice in a row, whatever the kernel offers."""

from __future__ import annotations

from types import TracebackType

import pytest

from triton_launcher import ports


class OfferedPorts:
    """A stand-in for ``socket.socket`` whose ``bind((host, 0))`` gets the next port offered."""

    def __init__(self, offered: list[int]) -> None:
        self.offered = offered

    def __call__(self, *args: object) -> OfferedPorts:
        return self

    def __enter__(self) -> OfferedPorts:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        self.port = self.offered.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_offered_again_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_HANDED_OUT", ports.collections.deque(maxlen=8))
    monkeypatch.setattr(ports.socket, "socket", OfferedPorts([41000, 41000, 41000, 41001, 41002]))
    assert [ports.free_port(), ports.free_port(), ports.free_port()] == [41000, 41001, 41002]


def test_a_kernel_that_offers_only_handed_out_ports_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "_HANDED_OUT", ports.collections.deque([41000], maxlen=8))
    monkeypatch.setattr(ports.socket, "socket", OfferedPorts([41000] * 100))
    with pytest.raises(OSError, match="not handed out"):
        ports.free_port()


def test_real_ports_are_distinct() -> None:
    picked = [ports.free_port() for _ in range(50)]
    assert len(set(picked)) == len(picked)
