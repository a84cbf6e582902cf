"""Free ports and listening sockets: the helpers every embedded server and test binds with."""

from __future__ import annotations

import socket

import pytest

from amtp_obs import net


def test_free_port_is_outside_the_ephemeral_range_and_bindable() -> None:
    low, high = net.ephemeral_range()
    for _ in range(50):
        port = net.free_port()
        assert not low <= port <= high, port
        with net.listen_socket(net.LOOPBACK, port):
            pass


def test_free_port_never_hands_out_the_same_port_twice_or_an_excluded_one() -> None:
    first = net.free_ports(40)
    assert len(set(first)) == 40
    more = [net.free_port(exclude=first) for _ in range(40)]
    assert not set(more) & set(first)
    assert len(set(more)) == 40


def test_free_port_skips_a_port_that_is_listening(monkeypatch: pytest.MonkeyPatch) -> None:
    with net.listen_socket(net.LOOPBACK, net.free_port()) as busy:
        taken = busy.getsockname()[1]
        assert not net.port_is_free(taken)
        choices = iter([taken, taken])
        real = net._rng.choice
        monkeypatch.setattr(net._rng, "choice", lambda seq: next(choices, None) or real(seq))
        assert net.free_port() != taken


def test_ephemeral_range_matches_what_the_kernel_gives_bind_zero() -> None:
    low, high = net.ephemeral_range()
    with socket.socket() as s:
        s.bind((net.LOOPBACK, 0))
        assert low <= s.getsockname()[1] <= high


def test_listen_socket_serves_and_reports_a_taken_port() -> None:
    port = net.free_port()
    with net.listen_socket(net.LOOPBACK, port) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with pytest.raises(OSError):
            net.listen_socket(net.LOOPBACK, port)
