"""pika over TLS (amqps): a password login with the server verified against the test CA, and
an EXTERNAL login with a client certificate (the user ``interop-cert`` has no password).

``interop/with-warren.sh`` generates the certificates and sets AMQPS_URL, TLS_CA,
TLS_CLIENT_CERT and TLS_CLIENT_KEY; against a broker started otherwise these tests are skipped
(they need a TLS listener configured with that CA).
"""

import os
import ssl

import pika
import pytest

from conftest import unique

needs_tls = pytest.mark.skipif(not os.environ.get("AMQPS_URL"), reason="no amqps listener (AMQPS_URL unset)")


def tls_params(client_cert: bool, external: bool) -> pika.URLParameters:
    ctx = ssl.create_default_context(cafile=os.environ["TLS_CA"])
    if client_cert:
        ctx.load_cert_chain(os.environ["TLS_CLIENT_CERT"], os.environ["TLS_CLIENT_KEY"])
    url = os.environ["AMQPS_URL"]
    p = pika.URLParameters(url)
    p.ssl_options = pika.SSLOptions(ctx, "localhost")
    if external:
        p.credentials = pika.credentials.ExternalCredentials()
    p.socket_timeout = 5
    p.connection_attempts = 1
    return p


def round_trip(conn: pika.BlockingConnection, user_id=None) -> bytes:
    ch = conn.channel()
    q = ch.queue_declare(queue=unique("tls"), exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"over tls", pika.BasicProperties(user_id=user_id))
    method, _props, body = ch.basic_get(q, auto_ack=True)
    assert method is not None, "the message came back"
    return body


@needs_tls
def test_password_login_over_tls():
    conn = pika.BlockingConnection(tls_params(client_cert=False, external=False))
    try:
        assert round_trip(conn) == b"over tls"
    finally:
        conn.close()


@needs_tls
def test_external_login_with_a_client_certificate():
    conn = pika.BlockingConnection(tls_params(client_cert=True, external=True))
    try:
        # The broker checks user_id against the login: it must be the certificate's user.
        assert round_trip(conn, user_id="interop-cert") == b"over tls"
    finally:
        conn.close()


@needs_tls
def test_external_without_a_certificate_is_refused():
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(client_cert=False, external=True))
