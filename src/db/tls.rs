//! TLS to PostgreSQL with rustls, chosen by libpq's `sslmode` and `sslrootcert` parameters of
//! `database.url`, which tokio-postgres does not read in full (it knows only `disable`, `prefer`
//! and `require`, and never verifies a certificate itself).
//!
//! As in libpq: `prefer` (the default) and `require` encrypt without checking who answers,
//! unless `sslrootcert` names a CA, which makes them check the chain as `verify-ca` does;
//! `verify-ca` checks the chain, `verify-full` the chain and the host name. Without
//! `sslrootcert` (or with `sslrootcert=system`) the chain is checked against the system's roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::SslMode as PostgresSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, less `allow` (plain text first, then TLS), which nobody should want.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => {
                Err("has sslmode=allow, which is not supported: use prefer or stricter".into())
            }
            _ => Err(format!(
                "has sslmode={value:?}: it must be disable, prefer, require, verify-ca or \
                 verify-full"
            )),
        }
    }
}

/// Where the certificates a server shows are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    System,
    File(PathBuf),
}

/// The TLS part of `database.url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: SslMode,
    pub roots: Roots,
}

/// How much of a server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Encrypted, but anyone may answer.
    Nothing,
    /// Signed by a trusted CA, for whatever host.
    Chain,
    /// Signed by a trusted CA, for the host connected to.
    ChainAndHost,
}

impl TlsOptions {
    fn check(&self) -> Check {
        match (self.mode, &self.roots) {
            (SslMode::VerifyFull, _) => Check::ChainAndHost,
            (SslMode::VerifyCa, _) => Check::Chain,
            (SslMode::Prefer | SslMode::Require, Roots::File(_)) => Check::Chain,
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, _) => Check::Nothing,
        }
    }
}

impl TlsOptions {
    /// Whether the server is known to be the one the URL names (`verify-full`).
    pub fn checks_host(&self) -> bool {
        self.check() == Check::ChainAndHost
    }
}

/// The hosts of `config` reached over a network, not this machine's loopback or sockets.
pub fn remote_hosts(config: &tokio_postgres::Config) -> Vec<String> {
    config
        .get_hosts()
        .iter()
        .filter_map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => Some(name.clone()),
            _ => None,
        })
        .filter(|name| is_remote(name))
        .collect()
}

/// A host name or address that is not this machine's loopback.
pub fn is_remote(host: &str) -> bool {
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// Splits `database.url` into tokio-postgres's settings and the TLS options, which are taken out
/// of the URL's query. An error says what is wrong with the URL ("is not a PostgreSQL URL"),
/// never showing it. Only the URL form (`postgres://...`) may carry the verifying modes and
/// `sslrootcert`; a `key=value` string goes to tokio-postgres as it is.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, TlsOptions), String> {
    let mut options = TlsOptions {
        mode: SslMode::Prefer,
        roots: Roots::System,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let rest = match url.split_once('?') {
        Some((base, query)) if is_url => {
            let mut kept = Vec::new();
            for pair in query.split('&') {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
                match decode(key).as_str() {
                    "sslmode" => options.mode = SslMode::parse(&decode(value))?,
                    "sslrootcert" => {
                        options.roots = match decode(value).as_str() {
                            "" => return Err("has an empty sslrootcert".into()),
                            "system" => Roots::System,
                            path => Roots::File(PathBuf::from(path)),
                        }
                    }
                    _ => kept.push(pair),
                }
            }
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
        _ => url.to_owned(),
    };
    // tokio-postgres's reason is left out: it may quote a part of the string, password and all.
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|_| "is not a PostgreSQL URL".to_owned())?;
    if !is_url {
        // tokio-postgres read the key=value string's own sslmode, if any.
        options.mode = match config.get_ssl_mode() {
            PostgresSslMode::Disable => SslMode::Disable,
            PostgresSslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
    }
    config.ssl_mode(match options.mode {
        SslMode::Disable => PostgresSslMode::Disable,
        SslMode::Prefer => PostgresSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PostgresSslMode::Require,
    });
    Ok((config, options))
}

/// The connector for `options`; reads `sslrootcert` or the system's roots when it checks.
pub fn connector(options: &TlsOptions) -> anyhow::Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let lenient = |chain| {
        let verifier = Lenient {
            chain,
            provider: provider.clone(),
        };
        builder
            .clone()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    let config = match options.check() {
        Check::Nothing => lenient(None),
        Check::Chain => {
            let roots = Arc::new(roots(&options.roots)?);
            let chain =
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?;
            lenient(Some(chain))
        }
        Check::ChainAndHost => builder
            .clone()
            .with_root_certificates(roots(&options.roots)?)
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots(roots: &Roots) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            for cert in read_certificates(path)? {
                store.add(cert).map_err(|e| {
                    anyhow::anyhow!(
                        "sslrootcert {}: a certificate is unusable: {e}",
                        path.display()
                    )
                })?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                anyhow::bail!(
                    "no system root certificates were found to check the database's certificate: \
                     name its CA with sslrootcert in database.url"
                );
            }
        }
    }
    Ok(store)
}

/// The PEM certificates of a file, at least one.
pub fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the CA file {}: {e}", path.display()))?;
    certificates_in(&pem, path)
}

/// The text of a PEM file of certificates, checked to hold at least one.
pub fn read_certificates_pem(path: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the CA file {}: {e}", path.display()))?;
    certificates_in(pem.as_bytes(), path)?;
    Ok(pem)
}

fn certificates_in(pem: &[u8], path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the CA file {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("the CA file {} holds no certificate", path.display());
    }
    Ok(certs)
}

/// A check short of `verify-full`: `chain` is webpki's check of the chain, whose verdict on the
/// host name is ignored (`verify-ca`); without it the certificate is not checked at all
/// (`prefer` and `require` without a CA), as in libpq: encrypted against eavesdroppers, not
/// against a server in the middle. The handshake's signatures are checked either way, so the
/// session belongs to whoever holds the certificate shown.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_set_the_mode() {
        let (config, options) = parse_url(
            "postgres://u:p@db.example:5432/pay?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem\
             &connect_timeout=3",
        )
        .unwrap();
        assert_eq!(options.mode, SslMode::VerifyFull);
        assert_eq!(options.roots, Roots::File("/etc/ca.pem".into()));
        assert_eq!(config.get_ssl_mode(), PostgresSslMode::Require);
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert_eq!(options.check(), Check::ChainAndHost);

        let (config, options) = parse_url("postgres://u@h/db").unwrap();
        assert_eq!(options.mode, SslMode::Prefer);
        assert_eq!(config.get_ssl_mode(), PostgresSslMode::Prefer);
        assert_eq!(options.check(), Check::Nothing);

        let (config, options) = parse_url("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), PostgresSslMode::Disable);
        assert_eq!(options.mode, SslMode::Disable);
    }

    #[test]
    fn a_ca_makes_require_check_the_chain_as_libpq_does() {
        let (_, options) = parse_url("postgres://u@h/db?sslmode=require&sslrootcert=/ca").unwrap();
        assert_eq!(options.check(), Check::Chain);
        let (_, options) = parse_url("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(options.check(), Check::Nothing);
        let (_, options) = parse_url("postgres://u@h/db?sslmode=verify-ca").unwrap();
        assert_eq!(
            (options.check(), options.roots),
            (Check::Chain, Roots::System)
        );
        let (_, options) =
            parse_url("postgres://u@h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(options.roots, Roots::System);
    }

    #[test]
    fn remote_hosts_are_those_not_on_this_machine() {
        let (config, _) =
            parse_url("postgres://u@localhost:1,127.0.0.1:2,[::1]:3,db.internal:4,10.0.0.5:5/d")
                .unwrap();
        assert_eq!(remote_hosts(&config), vec!["db.internal", "10.0.0.5"]);
    }

    #[test]
    fn bad_tls_parameters_are_refused_by_name() {
        for (url, expected) in [
            (
                "postgres://u@h/db?sslmode=allow",
                "allow, which is not supported",
            ),
            ("postgres://u@h/db?sslmode=verify", "it must be disable"),
            ("postgres://u@h/db?sslrootcert=", "has an empty sslrootcert"),
            (
                "postgres://u:hunter2@h/db?port=x",
                "is not a PostgreSQL URL",
            ),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn key_value_strings_keep_their_own_sslmode() {
        let (_, options) = parse_url("host=h user=u sslmode=require").unwrap();
        assert_eq!(options.mode, SslMode::Require);
        assert!(parse_url("host=h user=u sslmode=verify-full").is_err());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("pp-no-ca-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let options = TlsOptions {
            mode: SslMode::VerifyFull,
            roots: Roots::File(path.clone()),
        };
        let err = connector(&options).err().unwrap().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("holds no certificate"), "{err}");
    }
}
