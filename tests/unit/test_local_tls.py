"""The secure broker's throwaway TLS: a client that trusts the local CA accepts the broker's certificate for 127.0.0.1
and localhost, and no other name; the broker's key is its owner's alone."""

import socket
import ssl
import stat
import threading

import pytest

from fleet.local.tls import make_local_tls


def _handshake(tls, server_hostname: str) -> None:
    """A real TLS handshake over loopback: a server with the broker's chain and key, a client trusting only the CA."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tls.broker_cert, tls.broker_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True) as wrapped:
                wrapped.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(tls.ca_cert))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_context.wrap_socket(raw, server_hostname=server_hostname) as wrapped:
                wrapped.sendall(b"x")
    finally:
        listener.close()
        thread.join(5)


def test_a_client_trusting_the_local_ca_accepts_the_broker_for_loopback_and_localhost(tmp_path):
    tls = make_local_tls(tmp_path / "tls")
    _handshake(tls, "127.0.0.1")
    _handshake(tls, "localhost")


def test_the_broker_certificate_is_refused_for_any_other_name_and_by_a_client_without_the_ca(tmp_path):
    tls = make_local_tls(tmp_path / "tls")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls, "kafka.example.com")
    other = make_local_tls(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls.__class__(other.ca_cert, tls.broker_cert, tls.broker_key), "127.0.0.1")


def test_the_broker_key_is_readable_by_its_owner_only_and_the_ca_key_is_not_kept(tmp_path):
    tls = make_local_tls(tmp_path / "tls")
    assert stat.S_IMODE(tls.broker_key.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["broker-chain.pem", "broker-key.pem", "ca.pem"]
    assert tls.broker_cert.read_text().count("BEGIN CERTIFICATE") == 2, "the broker's certificate, then the CA's"
