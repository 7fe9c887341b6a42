//! TLS termination with rustls (the `ring` provider): TLS 1.2 and 1.3, ALPN for HTTP/2,
//! optional or required client certificates checked against `--ca-certs`, and
//! certificates re-read on reload (SIGHUP) without touching open connections: new
//! handshakes use the new certificate, and a certificate that does not load leaves the
//! old one in place and says why.
//!
//! What the handshake learned reaches the application as mod_ssl names it: `HTTPS=on`,
//! `SSL_PROTOCOL`, `SSL_CIPHER`, `SSL_CLIENT_VERIFY` and, with a client certificate,
//! `SSL_CLIENT_S_DN` / `SSL_CLIENT_I_DN` in mod_ssl 2.4's RFC 2253 form.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{CertReqs, TlsConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        what: String,
    },
    /// rustls refused the material.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being built.
        context: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("--ca-certs {path}: {what}")]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// Why.
        what: String,
    },
}

fn file_error(path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        what: what.to_string(),
    }
}

/// The server certificate, swappable under open connections.
#[derive(Debug)]
struct HotCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for HotCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// TLS as the listeners use it.
pub(crate) struct TlsState {
    cfg: TlsConfig,
    provider: Arc<CryptoProvider>,
    cert: Arc<HotCert>,
    /// Rebuilt when the client CAs change (the verifier is fixed per rustls config);
    /// each handshake takes the current one.
    live: RwLock<Arc<ServerConfig>>,
    alpn: Vec<Vec<u8>>,
}

/// What a finished handshake tells the application.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSession {
    /// `TLSv1.2` or `TLSv1.3`.
    pub protocol: &'static str,
    /// The IANA name of the cipher suite.
    pub cipher: String,
    /// The client certificate's subject and issuer, when one was presented (and
    /// therefore verified).
    pub client_s_dn: Option<String>,
    pub client_i_dn: Option<String>,
    /// ALPN chose HTTP/2.
    pub h2: bool,
}

impl TlsState {
    /// Loads the certificate, key and client CAs; `alpn` lists the protocols offered, in
    /// order of preference.
    pub fn load(cfg: &TlsConfig, alpn: Vec<Vec<u8>>) -> Result<TlsState, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load_certified_key(&cfg.certfile, &cfg.keyfile, &provider)?;
        let cert = Arc::new(HotCert(RwLock::new(Arc::new(key))));
        let config = build_config(cfg, &provider, cert.clone(), alpn.clone())?;
        Ok(TlsState {
            cfg: cfg.clone(),
            provider,
            cert,
            live: RwLock::new(Arc::new(config)),
            alpn,
        })
    }

    /// Re-reads the certificate, key and client CAs. On failure the ones in use stay and
    /// the error says why; open connections are never touched.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.cfg.certfile, &self.cfg.keyfile, &self.provider)?;
        // The verifier first: if the CAs do not load, nothing changes.
        let config = build_config(
            &self.cfg,
            &self.provider,
            self.cert.clone(),
            self.alpn.clone(),
        )?;
        *self.cert.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// An acceptor for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.live.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Every TCP listener terminates TLS (not only `tls:` binds).
    pub fn all_tcp(&self) -> bool {
        self.cfg.all_tcp
    }
}

/// What the handshake of `conn` established.
pub(crate) fn session_of(conn: &rustls::ServerConnection) -> TlsSession {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or_default()
        .to_owned();
    let leaf = conn.peer_certificates().and_then(|c| c.first());
    let (client_s_dn, client_i_dn) = match leaf.map(|c| x509_parser::parse_x509_certificate(c)) {
        Some(Ok((_, cert))) => (
            Some(dn::rfc2253(cert.subject())),
            Some(dn::rfc2253(cert.issuer())),
        ),
        _ => (None, None),
    };
    TlsSession {
        protocol,
        cipher,
        client_s_dn,
        client_i_dn,
        h2: conn.alpn_protocol() == Some(b"h2"),
    }
}

fn load_certified_key(
    certfile: &Path,
    keyfile: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .map_err(|e| file_error(certfile, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(certfile, e))?;
    if chain.is_empty() {
        return Err(file_error(certfile, "no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| file_error(keyfile, e))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rustls {
        context: format!(
            "--certfile {} with --keyfile {}",
            certfile.display(),
            keyfile.display()
        ),
        source,
    })
}

fn build_config(
    cfg: &TlsConfig,
    provider: &Arc<CryptoProvider>,
    cert: Arc<HotCert>,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, TlsError> {
    let rustls_error = |context: &str| {
        let context = context.to_owned();
        move |source| TlsError::Rustls { context, source }
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(rustls_error("TLS versions"))?;
    let builder = match (&cfg.ca_certs, cfg.cert_reqs) {
        (_, CertReqs::None) | (None, _) => builder.with_no_client_auth(),
        (Some(ca), reqs) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, e))? {
                let c = c.map_err(|e| file_error(ca, e))?;
                roots
                    .add(c)
                    .map_err(rustls_error(&format!("--ca-certs {}", ca.display())))?;
            }
            let mut v =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if reqs == CertReqs::Optional {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(|e| TlsError::Verifier {
                path: ca.clone(),
                what: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Distinguished names as mod_ssl 2.4 writes them by default (`X509_NAME_print_ex` with
/// `XN_FLAG_RFC2253` minus `ASN1_STRFLGS_ESC_MSB`): the last RDN first, `,` between
/// RDNs and `+` inside one, OpenSSL's short names, RFC 2253 escaping, non-ASCII as is.
/// Applications behind Apache compare these strings byte for byte.
mod dn {
    use x509_parser::asn1_rs::{BmpString, Tag, ToDer};
    use x509_parser::prelude::{AttributeTypeAndValue, X509Name};

    fn short_name(oid: &str) -> Option<&'static str> {
        Some(match oid {
            "2.5.4.3" => "CN",
            "2.5.4.6" => "C",
            "2.5.4.7" => "L",
            "2.5.4.8" => "ST",
            "2.5.4.10" => "O",
            "2.5.4.11" => "OU",
            "2.5.4.5" => "serialNumber",
            "2.5.4.9" => "street",
            "2.5.4.12" => "title",
            "2.5.4.4" => "SN",
            "2.5.4.42" => "GN",
            "2.5.4.43" => "initials",
            "2.5.4.17" => "postalCode",
            "2.5.4.46" => "dnQualifier",
            "2.5.4.65" => "pseudonym",
            "2.5.4.97" => "organizationIdentifier",
            "1.2.840.113549.1.9.1" => "emailAddress",
            "0.9.2342.19200300.100.1.25" => "DC",
            "0.9.2342.19200300.100.1.1" => "UID",
            _ => return None,
        })
    }

    fn text(atv: &AttributeTypeAndValue<'_>) -> Option<String> {
        let any = atv.attr_value();
        match any.tag() {
            Tag::Utf8String
            | Tag::PrintableString
            | Tag::Ia5String
            | Tag::NumericString
            | Tag::VisibleString => std::str::from_utf8(any.data).ok().map(str::to_owned),
            // OpenSSL reads T61String as Latin-1.
            Tag::T61String => Some(any.data.iter().map(|&b| b as char).collect()),
            Tag::BmpString => BmpString::try_from(any.clone()).ok().map(|s| s.string()),
            _ => None,
        }
    }

    fn escape(v: &str, out: &mut String) {
        let n = v.chars().count();
        for (i, c) in v.chars().enumerate() {
            match c {
                ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                    out.push('\\');
                    out.push(c);
                }
                '#' if i == 0 => out.push_str("\\#"),
                ' ' if i == 0 || i + 1 == n => out.push_str("\\ "),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\{:02X}", c as u32))
                }
                c => out.push(c),
            }
        }
    }

    /// `name` in mod_ssl's form.
    pub fn rfc2253(name: &X509Name<'_>) -> String {
        let mut entries = Vec::new();
        for (i, rdn) in name.iter_rdn().enumerate() {
            for atv in rdn.iter() {
                entries.push((i, atv));
            }
        }
        let mut out = String::new();
        let mut prev: Option<usize> = None;
        for (set, atv) in entries.into_iter().rev() {
            if let Some(p) = prev {
                out.push(if p == set { '+' } else { ',' });
            }
            prev = Some(set);
            let oid = atv.attr_type().to_id_string();
            let short = short_name(&oid);
            out.push_str(short.unwrap_or(&oid));
            out.push('=');
            match (short, text(atv)) {
                (Some(_), Some(v)) => escape(&v, &mut out),
                _ => {
                    out.push('#');
                    for b in atv.attr_value().to_der_vec().unwrap_or_default() {
                        out.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn values_are_escaped_as_rfc_2253_says() {
            let mut out = String::new();
            super::escape(" a,b+c\"d\\e<f>g;h ", &mut out);
            assert_eq!(out, "\\ a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\ ");
            let mut out = String::new();
            super::escape("#x\u{1}é", &mut out);
            assert_eq!(out, "\\#x\\01é");
        }
    }
}
