"""The transport under fleet connections: a buffered socket that wakes its reader on close, a
handshake timed without a thread, and a transport thread that sleeps while there is nothing
to do (against paramiko's server side, in-process, and a socket pair)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import paramiko
import pytest

from fabfile.remote import transport
from fabfile.remote.host import SshHost
from fabfile.remote.transport import DeadlinePacketizer, FleetSocket, FleetTransport, output_event, wake_interval
from tests.unit.remote.test_fleet_connections import connected  # noqa: F401  # the fixture

__all__ = ["connected"]


@pytest.fixture
def pair() -> Iterator[tuple[FleetSocket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    theirs, _ = listener.accept()
    listener.close()
    wrapped = FleetSocket(ours)
    yield wrapped, theirs
    wrapped.close()
    theirs.close()


def test_a_buffered_read_gives_the_bytes_in_order_and_never_more_than_asked(
        pair: tuple[FleetSocket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.sendall(b"0123456789")
    pieces = [ours.recv(4), ours.recv(4), ours.recv(4)]
    assert pieces == [b"0123", b"4567", b"89"]  # the last read ends with what had arrived


def test_a_buffered_read_serves_from_its_buffer_before_the_socket(pair: tuple[FleetSocket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.sendall(b"first")
    assert ours.recv(2) == b"fi"
    theirs.sendall(b"second")
    assert ours.recv(100) == b"rst"  # what was buffered, without waiting for more
    assert ours.recv(100) == b"second"


def test_the_end_of_the_stream_reads_as_empty(pair: tuple[FleetSocket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.sendall(b"x")
    theirs.shutdown(socket.SHUT_WR)
    assert (ours.recv(10), ours.recv(10)) == (b"x", b"")


def test_closing_wakes_a_reader_blocked_on_the_socket(pair: tuple[FleetSocket, socket.socket]) -> None:
    ours, _ = pair
    ours.settimeout(3600)
    got: list[bytes | BaseException] = []

    def read() -> None:
        try:
            got.append(ours.recv(10))
        except OSError as exc:
            got.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while not reader.is_alive():
        pass
    threading.Event().wait(0.2)  # let it block in recv
    ours.close()
    reader.join(timeout=30)
    assert not reader.is_alive() and got  # an hour-long timeout would still be waiting


def test_the_handshake_deadline_times_out_as_paramikos_timer_did() -> None:
    a, b = socket.socketpair()
    try:
        packetizer = DeadlinePacketizer(a)
        assert not packetizer.handshake_timed_out()  # not started: never timed out
        packetizer.start_handshake(-1)  # a deadline already past
        assert packetizer.handshake_timed_out()
        packetizer.complete_handshake()
        assert not packetizer.handshake_timed_out()
        fresh = DeadlinePacketizer(b)
        fresh.start_handshake(3600)
        assert not fresh.handshake_timed_out()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(("keepalive_s", "wake_s"), [(0, transport.IDLE_WAKE_S), (10, 5.0), (60, transport.IDLE_WAKE_S),
                                                     (3, 1.5), (1, 0.5)])
def test_the_transport_wakes_at_least_twice_per_keepalive(keepalive_s: int, wake_s: float) -> None:
    assert wake_interval(keepalive_s) == wake_s


def test_a_fleet_connection_runs_on_the_fleet_transport(connected) -> None:  # noqa: F811
    t = connected.transport
    assert isinstance(t, FleetTransport) and isinstance(t.packetizer, DeadlinePacketizer)
    assert isinstance(t.sock, FleetSocket)
    assert t.sock.gettimeout() == wake_interval(10)  # open_checked set keepalives every 10 s
    assert not [th for th in threading.enumerate() if isinstance(th, threading.Timer) and th.is_alive()]
    assert SshHost(connected).run("hello").text == "out\n"


def test_closing_a_connection_ends_its_transport_thread_at_once(connected) -> None:  # noqa: F811
    t = connected.transport
    connected.close()
    t.join(timeout=30)
    assert not t.is_alive()  # it slept in a socket read of IDLE_WAKE_S and was woken by the close


def test_a_channels_output_event_is_set_by_either_stream_and_by_eof() -> None:
    channel = paramiko.Channel(1)  # not attached to a transport: its buffers are fed by hand
    arrived = output_event(channel)
    assert not arrived.is_set()
    channel.in_buffer.feed(b"out")
    assert arrived.is_set()
    assert channel.recv(10) == b"out" and not arrived.is_set()  # the read that empties it clears it
    channel.in_stderr_buffer.feed(b"err")
    assert arrived.is_set()
    assert channel.recv_stderr(10) == b"err" and not arrived.is_set()
    channel.in_buffer.feed(b"more")
    channel.in_stderr_buffer.feed(b"late")
    # Emptying one stream clears the event although the other has data: why every reader
    # drains both streams before it waits.
    assert channel.recv(10) == b"more" and channel.recv_stderr_ready()
    assert channel.recv_stderr(10) == b"late"
    channel.in_buffer.close()  # what EOF, a close and a lost connection do
    assert arrived.is_set()


def test_reads_larger_than_the_buffer_come_whole_and_in_order(pair: tuple[FleetSocket, socket.socket]) -> None:
    ours, theirs = pair
    sent = bytes(range(256)) * 1000  # 256 KB: paramiko's big packets, read past the buffer
    threading.Thread(target=theirs.sendall, args=(sent,), daemon=True).start()
    got = bytearray(ours.recv(16))  # a packet's first block, then its rest in big reads
    while len(got) < len(sent):
        got += ours.recv(min(40_000, len(sent) - len(got)))
    assert bytes(got) == sent


def test_the_private_parts_of_paramiko_we_override_are_still_there() -> None:
    """fleetbench's transport overrides paramiko internals (pyproject pins the range they were
    made against): a paramiko release that renames or reshapes one must fail here, not silently
    fall back to paramiko's own behaviour."""
    import inspect

    from paramiko.buffered_pipe import BufferedPipe
    from paramiko.packet import Packetizer

    assert "packetizer_class" in inspect.signature(paramiko.Transport.__init__).parameters
    assert isinstance(paramiko.Transport._preferred_ciphers, tuple)
    assert "aes128-gcm@openssh.com" in paramiko.Transport._preferred_ciphers
    assert isinstance(paramiko.Transport._active_check_timeout, (int, float))
    assert list(inspect.signature(paramiko.Transport._parse_debug).parameters) == ["self", "m"]
    for name, params in (("start_handshake", ["self", "timeout"]), ("handshake_timed_out", ["self"]),
                         ("complete_handshake", ["self"])):
        assert list(inspect.signature(getattr(Packetizer, name)).parameters) == params, name
    assert list(inspect.signature(BufferedPipe.set_event).parameters) == ["self", "event"]
    # FleetTransport's overrides are the ones paramiko calls (same names on the subclass).
    assert FleetTransport._active_check_timeout == transport.IDLE_WAKE_S
    assert issubclass(DeadlinePacketizer, Packetizer)
