"""Free ports and listening sockets: the helpers every embedded server and test binds with."""

from __future__ import annotations

import os
import re
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


def test_bound_sockets_reads_what_this_process_bound() -> None:
    with (
        net.listen_socket(net.LOOPBACK, net.free_port()) as v4,
        net.listen_socket("::1", 0) as v6,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.create_connection(v4.getsockname()[:2]) as client,
    ):
        udp.bind(("0.0.0.0", 0))
        ports = v4.getsockname()[1], v6.getsockname()[1], udp.getsockname()[1], client.getsockname()[1]
        found = {(s.protocol, s.host, s.port): s for s in net.bound_sockets([os.getpid()])}
    assert found[("tcp", "127.0.0.1", ports[0])].loopback
    assert found[("tcp6", "::1", ports[1])].loopback
    wildcard = found[("udp", "0.0.0.0", ports[2])]
    assert not wildcard.loopback and wildcard.pid == os.getpid()
    assert not any(port == ports[3] for _, _, port in found)  # a connected client is not a listener
    assert net.bound_sockets([]) == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("::ffff:7f00:1", True),
     ("0.0.0.0", False), ("::", False), ("::ffff:a00:1", False), ("10.0.0.1", False)],
)  # fmt: skip
def test_loopback_includes_ipv4_mapped_loopback(host: str, loopback: bool) -> None:
    assert net.BoundSocket(1, "tcp6", host, 1).loopback is loopback


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (":4317", ("127.0.0.1", 4317)),  # the one rule: host-less is loopback, not every interface
        ("localhost:80", ("127.0.0.1", 80)),
        ("0.0.0.0:4318", ("0.0.0.0", 4318)),  # every interface only when asked for
        ("[::1]:9", ("::1", 9)),
        ("[::]:9", ("::", 9)),
        ("tempo", ("tempo", 3200)),
        ("", ("127.0.0.1", 3200)),
    ],
)
def test_split_endpoint(endpoint: str, expected: tuple[str, int]) -> None:
    assert net.split_endpoint(endpoint, 3200) == expected
    assert net.split_endpoint(net.join_host_port(*expected)) == expected


@pytest.mark.parametrize("endpoint", ["host:http", "host:70000", "[::1]:x"])
def test_split_endpoint_rejects_a_bad_port_naming_the_endpoint(endpoint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(endpoint))):
        net.split_endpoint(endpoint)


def test_client_host_reaches_a_wildcard_listener_on_loopback() -> None:
    assert [net.client_host(h) for h in ("", "0.0.0.0", "::", "10.1.2.3")] == [
        "127.0.0.1", "127.0.0.1", "127.0.0.1", "10.1.2.3"
    ]  # fmt: skip
