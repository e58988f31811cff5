//! An `https://` channel still verifies the server's certificate although ferry
//! starts libgit2 without its certificate bundle (see `ferry::git_runtime`): the
//! bundle is loaded when the channel is first used, from `SSL_CERT_FILE` when
//! the user set it.
//!
//! The server is a TLS listener (rustls) with a certificate from a throw-away
//! CA (rcgen) that answers every request with 404: a client that got past the
//! certificate check reports the 404, one that did not reports the certificate.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::World;

/// A CA and the listener's port; the CA's certificate is in `ca.pem` of the world.
fn serve_https(w: &World) -> u16 {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = name("ferry test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(w.path("ca.pem"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    // Not the CA's name, or OpenSSL takes the leaf for self-signed.
    leaf_params.distinguished_name = name("ferry test server");
    let leaf = leaf_params.signed_by(&key, &ca).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            // A client that refuses the certificate ends the handshake here.
            let mut reader = BufReader::new(&mut tls);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = tls.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = tls.flush();
        }
    });
    port
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

#[test]
fn an_https_channel_verifies_the_server_against_the_certificate_bundle() {
    let w = World::new();
    let port = serve_https(&w);
    std::fs::create_dir_all(w.path("support")).unwrap();
    w.ok(
        "support",
        &["init", "--site", "support", "--tracker", "local"],
    );
    let channel = format!("https://127.0.0.1:{port}/exchange.git");
    w.ok(
        "support",
        &[
            "connection",
            "add",
            "engineering",
            "--channel",
            &channel,
            "--project",
            "SUP=ENG",
        ],
    );

    // The system's bundle does not know the throw-away CA: refused.
    let out = w
        .command("support", &["pull"])
        .env_remove("SSL_CERT_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The port is in the message and may hold the digits 404: look past it.
    let said = stderr.replace(&port.to_string(), "PORT");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(said.contains("certificate"), "{stderr}");
    assert!(!said.contains("404"), "{stderr}");

    // The user's bundle does: the request goes through and meets the 404.
    let out = w
        .command("support", &["pull"])
        .env("SSL_CERT_FILE", w.path("ca.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr.replace(&port.to_string(), "PORT");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(said.contains("404"), "{stderr}");
    assert!(!said.contains("certificate"), "{stderr}");
}
