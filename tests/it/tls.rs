//! The amqps listener: TLS with and without client certificates, EXTERNAL logins from the
//! certificate's common name, refusals of untrusted or missing certificates, and certificate
//! reload on SIGHUP. Certificates are generated here (rcgen); lapin connects over rustls.

use lapin::options::*;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::common::*;

/// A CA that signs server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// (certificate PEM, key PEM) for `cn` with these subject alternative names.
    fn issue(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, "Warren tests");
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// Files of one TLS setup in a temp dir.
struct Setup {
    dir: TempDir,
    ca: Ca,
}

impl Setup {
    fn new() -> Setup {
        let dir = TempDir::new();
        let ca = Ca::new("Warren test CA");
        let (cert, key) = ca.issue("localhost", &["localhost", "127.0.0.1"]);
        std::fs::write(dir.0.join("server.pem"), cert).unwrap();
        std::fs::write(dir.0.join("server.key"), key).unwrap();
        std::fs::write(dir.0.join("ca.pem"), ca.pem()).unwrap();
        Setup { dir, ca }
    }

    fn path(&self, f: &str) -> String {
        self.dir.0.join(f).to_str().unwrap().to_string()
    }

    fn config(&self, verify: bool, fail_if_no_peer_cert: bool) -> String {
        format!(
            r#"
[auth]
mechanisms = ["PLAIN", "AMQPLAIN", "EXTERNAL"]

[[auth.users]]
name = "alice"
# No password: certificate logins only.

[[auth.permissions]]
user = "alice"
vhost = "/"

[tls]
listen = "127.0.0.1:0"
certfile = "{}"
keyfile = "{}"
cacertfile = "{}"
verify_peer = {verify}
fail_if_no_peer_cert = {fail_if_no_peer_cert}
"#,
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem")
        )
    }
}

fn tls_config(ca_pem: &str, identity: Option<(String, String)>) -> OwnedTLSConfig {
    OwnedTLSConfig {
        cert_chain: Some(ca_pem.to_string()),
        identity: identity.map(|(cert, key)| OwnedIdentity::PKCS8 { pem: cert.into_bytes(), key: key.into_bytes() }),
    }
}

async fn connect_tls(uri: &str, tls: OwnedTLSConfig) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    within("TLS connect", Connection::connect_with_config(uri, ConnectionProperties::default(), tls, runtime)).await
}

/// Publish one message to a fresh queue and get it back (the connection works end to end).
async fn round_trip(c: &Connection, user_id: Option<&str>) -> lapin::Result<Vec<u8>> {
    let ch = c.create_channel().await?;
    let q = ch
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut props = BasicProperties::default();
    if let Some(u) = user_id {
        props = props.with_user_id(u.into());
    }
    ch.basic_publish("".into(), q.name().as_str().into(), BasicPublishOptions::default(), b"over tls", props)
        .await?
        .await?;
    let got = ch.basic_get(q.name().as_str().into(), BasicGetOptions { no_ack: true }).await?;
    Ok(got.map(|d| d.delivery.data.clone()).unwrap_or_default())
}

#[tokio::test]
async fn password_and_certificate_logins_over_tls() {
    let s = Setup::new();
    let b = Broker::start_with_config(&s.config(true, false));
    let tls_addr = b.tls_addr.clone().expect("the broker prints its amqps address");

    // No client certificate (allowed without fail_if_no_peer_cert): password login.
    let c = connect_tls(&format!("amqps://guest:guest@{tls_addr}/%2f"), tls_config(&s.ca.pem(), None)).await.unwrap();
    assert_eq!(round_trip(&c, None).await.unwrap(), b"over tls");
    // Without a certificate EXTERNAL is not offered: asking for it is an unknown mechanism.
    let refused =
        connect_tls(&format!("amqps://{tls_addr}/%2f?auth_mechanism=external"), tls_config(&s.ca.pem(), None)).await;
    assert!(refused.is_err(), "EXTERNAL without a client certificate must fail");

    // A certificate for CN=alice: EXTERNAL logs in as alice (who has no password at all).
    let alice = s.ca.issue("alice", &[]);
    let c = connect_tls(
        &format!("amqps://{tls_addr}/%2f?auth_mechanism=external"),
        tls_config(&s.ca.pem(), Some(alice.clone())),
    )
    .await
    .expect("EXTERNAL login with alice's certificate");
    // The login is alice's: user_id must name her, and naming someone else is refused.
    assert_eq!(round_trip(&c, Some("alice")).await.unwrap(), b"over tls");
    let (code, text) = expect_amqp_error(round_trip(&c, Some("guest")).await);
    assert_eq!(
        (code, text.as_str()),
        (406, "PRECONDITION_FAILED - user_id property set to 'guest' but authenticated user was 'alice'")
    );

    // A certificate for a user that does not exist: refused.
    let mallory = s.ca.issue("mallory", &[]);
    let r =
        connect_tls(&format!("amqps://{tls_addr}/%2f?auth_mechanism=external"), tls_config(&s.ca.pem(), Some(mallory)))
            .await;
    assert!(r.is_err(), "no user mallory");
    b.wait_for_log("refusal logged", |l| {
        l.contains("login refused") && l.contains("mallory") && l.contains("EXTERNAL")
    });

    // A certificate from another CA: the TLS handshake fails (verify_peer).
    let other = Ca::new("Someone else");
    let forged = other.issue("alice", &[]);
    let r =
        connect_tls(&format!("amqps://{tls_addr}/%2f?auth_mechanism=external"), tls_config(&s.ca.pem(), Some(forged)))
            .await;
    assert!(r.is_err(), "an untrusted client certificate is refused");
    b.wait_for_log("TLS failure logged", |l| l.contains("TLS handshake failed"));

    // The plain listener is unaffected and never offers EXTERNAL.
    let plain = b.connect().await;
    assert_eq!(round_trip(&plain, None).await.unwrap(), b"over tls");
    let (_raw, start) = RawAmqp::open(&b.addr).await;
    assert_eq!(start.mechanisms.to_string(), "PLAIN AMQPLAIN");
}

#[tokio::test]
async fn fail_if_no_peer_cert_refuses_clients_without_one() {
    let s = Setup::new();
    let b = Broker::start_with_config(&s.config(true, true));
    let tls_addr = b.tls_addr.clone().unwrap();
    let r = connect_tls(&format!("amqps://guest:guest@{tls_addr}/%2f"), tls_config(&s.ca.pem(), None)).await;
    assert!(r.is_err(), "no client certificate: refused in the TLS handshake");
    // With one, a password login still works (the certificate only has to be valid).
    let guest = s.ca.issue("guest", &[]);
    let c = connect_tls(&format!("amqps://guest:guest@{tls_addr}/%2f"), tls_config(&s.ca.pem(), Some(guest)))
        .await
        .expect("password login with a valid certificate");
    assert_eq!(round_trip(&c, None).await.unwrap(), b"over tls");
}

#[tokio::test]
async fn sighup_reloads_the_certificates() {
    let s = Setup::new();
    let b = Broker::start_with_config_logging(&s.config(false, false), "info");
    let tls_addr = b.tls_addr.clone().unwrap();
    let uri = format!("amqps://guest:guest@{tls_addr}/%2f");
    let before = connect_tls(&uri, tls_config(&s.ca.pem(), None)).await.expect("the first CA's certificate");

    // A new server certificate from a new CA, in place of the old files.
    let ca2 = Ca::new("Warren test CA 2");
    let (cert, key) = ca2.issue("localhost", &["localhost", "127.0.0.1"]);
    std::fs::write(s.dir.0.join("server.pem"), cert).unwrap();
    std::fs::write(s.dir.0.join("server.key"), key).unwrap();
    b.signal("HUP");
    b.wait_for_log("reload", |l| l.contains("TLS certificates reloaded"));

    assert!(connect_tls(&uri, tls_config(&s.ca.pem(), None)).await.is_err(), "the old certificate is gone");
    let after = connect_tls(&uri, tls_config(&ca2.pem(), None)).await.expect("the new certificate");
    assert_eq!(round_trip(&after, None).await.unwrap(), b"over tls");
    // The connection opened before the reload keeps working.
    assert_eq!(round_trip(&before, None).await.unwrap(), b"over tls");

    // A broken file: the reload fails, says so, and the certificate in use stays.
    std::fs::write(s.dir.0.join("server.key"), "not a key").unwrap();
    b.signal("HUP");
    b.wait_for_log("failed reload", |l| l.contains("TLS certificates not reloaded"));
    let again = connect_tls(&uri, tls_config(&ca2.pem(), None)).await.expect("still the second certificate");
    assert_eq!(round_trip(&again, None).await.unwrap(), b"over tls");
}

/// One HTTP/1.1 request over TLS (trusting `ca_pem`); the whole response as text.
async fn https_request(addr: &str, ca_pem: &str, request: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector.connect("localhost".try_into().unwrap(), tcp).await?;
    tls.write_all(request.as_bytes()).await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn the_management_api_over_https() {
    let s = Setup::new();
    let config = s.config(false, false).replace("[tls]", "[management]\ntls = true\n\n[tls]");
    let b = Broker::start_with_config(&config);
    let addr = b.http_addr.clone().expect("the API listens");
    let get = |auth: &str| {
        format!(
            "GET /api/overview HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
        )
    };
    let ok = within("an HTTPS request", https_request(&addr, &s.ca.pem(), &get("Z3Vlc3Q6Z3Vlc3Q="))).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"management_version\""), "{ok}");
    let refused = within("a refused login", https_request(&addr, &s.ca.pem(), &get("Z3Vlc3Q6bm9wZQ=="))).await.unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    // Plain HTTP on the HTTPS port gets no answer from the API.
    let plain = ureq::get(&format!("http://{addr}/api/overview")).call();
    assert!(plain.is_err(), "plain HTTP must not be served");
    // A client stuck in its handshake does not hold up others.
    let _stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let again =
        within("a request beside a stalled handshake", https_request(&addr, &s.ca.pem(), &get("Z3Vlc3Q6Z3Vlc3Q=")))
            .await
            .unwrap();
    assert!(again.starts_with("HTTP/1.1 200"));
}
