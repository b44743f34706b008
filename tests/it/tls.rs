//! TLS to PostgreSQL and RabbitMQ, against real servers with TLS on (PostgreSQL with
//! `ssl = on`, RabbitMQ with a TLS listener) whose CA and certificates this test makes: the
//! right CA connects, a wrong CA or a wrong host name is refused, and so is plain text where TLS
//! is required. Then a worker runs a command through both over TLS.

use std::path::{Path, PathBuf};

use pluspay::amqp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

use crate::chaos::services::Services;
use crate::support::{transfer, TestEnv};

/// A CA, a server certificate it signed for `localhost` only, and another CA.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn make() -> Certificates {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("pp-tls-{}", &suffix[..10]));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, ca_key) = certificate_authority("pluspay test CA");
        std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let signed = server.signed_by(&server_key, &issuer).unwrap();
        std::fs::write(dir.join("server.pem"), signed.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();

        let (other, other_key) = certificate_authority("another CA");
        std::fs::write(
            dir.join("other-ca.pem"),
            other.self_signed(&other_key).unwrap().pem(),
        )
        .unwrap();
        Certificates { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certificate_authority(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params, KeyPair::generate().unwrap())
}

/// `postgres://postgres@HOST:PORT/postgres?QUERY`.
fn database_url(host: &str, port: &str, query: &str) -> String {
    format!("postgres://postgres@{host}:{port}/postgres?{query}")
}

/// Whether the connection `url` makes is encrypted, as the server sees it; the error otherwise.
async fn connects_with_tls(url: &str) -> Result<bool, String> {
    let client = pluspay::db::connect(url).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

fn ca_query(mode: &str, ca: &Path) -> String {
    format!("sslmode={mode}&sslrootcert={}", ca.display())
}

fn assert_refused(result: Result<bool, String>, because: &str, what: &str) {
    match result {
        Ok(_) => panic!("{what}: connected"),
        Err(e) => assert!(e.contains(because), "{what}: {e}"),
    }
}

async fn connects_to_broker(url: &str, ca: Option<&Path>) -> Result<(), String> {
    let settings = pluspay::config::AmqpSettings {
        ca_file: ca.map(Path::to_path_buf),
        ..Default::default()
    };
    let tls = amqp::tls_config(&settings).map_err(|e| e.to_string())?;
    let connection = amqp::connect_with_tls(url, "test-tls", &tls)
        .await
        .map_err(|e| e.to_string())?;
    // A channel proves the AMQP handshake went through the TLS session.
    connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    connection.close(0, "done".into()).await.ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_and_rabbitmq_checks_who_answers() {
    let certificates = Certificates::make();
    let services = Services::start_with(&["--tls".as_ref(), certificates.dir.as_os_str()]).await;
    let pg_port = services.env_value("PP_PG_PORT");
    let amqps_port = services.env_value("PP_AMQPS_PORT");
    let (ca, other_ca) = (certificates.ca(), certificates.other_ca());

    // PostgreSQL.
    let url = |host: &str, query: &str| database_url(host, &pg_port, query);
    assert_eq!(
        connects_with_tls(&url("localhost", &ca_query("verify-full", &ca))).await,
        Ok(true)
    );
    assert_eq!(
        connects_with_tls(&url("127.0.0.1", &ca_query("verify-ca", &ca))).await,
        Ok(true),
        "verify-ca does not check the host name"
    );
    assert_refused(
        connects_with_tls(&url("127.0.0.1", &ca_query("verify-full", &ca))).await,
        "not valid for name",
        "a certificate for localhost at 127.0.0.1",
    );
    for mode in ["verify-full", "verify-ca", "require"] {
        assert_refused(
            connects_with_tls(&url("localhost", &ca_query(mode, &other_ca))).await,
            "UnknownIssuer",
            &format!("{mode} with another CA"),
        );
    }
    assert_refused(
        connects_with_tls(&url("localhost", "sslmode=verify-full")).await,
        "UnknownIssuer",
        "a private CA's certificate against the system's roots",
    );
    assert_eq!(
        connects_with_tls(&url("127.0.0.1", "sslmode=require")).await,
        Ok(true),
        "require without a CA encrypts without checking, as in libpq"
    );
    assert_eq!(
        connects_with_tls(&url("127.0.0.1", "connect_timeout=5")).await,
        Ok(true),
        "prefer, the default, encrypts when the server can"
    );
    assert_eq!(
        connects_with_tls(&url("127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );
    // The shared test server has no TLS.
    let plain = std::env::var("PP_TEST_DATABASE_URL").unwrap();
    assert_refused(
        connects_with_tls(&format!("{plain}?sslmode=require")).await,
        "TLS",
        "sslmode=require against a server without TLS",
    );

    // RabbitMQ.
    let broker = |host: &str, port: &str| format!("amqps://guest:guest@{host}:{port}/%2f");
    connects_to_broker(&broker("localhost", &amqps_port), Some(&ca))
        .await
        .expect("the right CA");
    let refused = [
        (
            broker("127.0.0.1", &amqps_port),
            Some(&ca),
            "not valid for name",
        ),
        (
            broker("localhost", &amqps_port),
            Some(&other_ca),
            "UnknownIssuer",
        ),
        (broker("localhost", &amqps_port), None, "UnknownIssuer"),
    ];
    for (url, ca, because) in refused {
        let err = connects_to_broker(&url, ca.map(PathBuf::as_path))
            .await
            .expect_err(&url);
        assert!(err.contains(because), "{url} with {ca:?}: {err}");
    }
    let plain_port = std::env::var("PP_TEST_AMQP_URL")
        .unwrap()
        .parse::<lapin::uri::AMQPUri>()
        .unwrap()
        .authority
        .port
        .to_string();
    connects_to_broker(&broker("localhost", &plain_port), Some(&ca))
        .await
        .expect_err("amqps:// to a broker's plain-text port");

    // A worker applies a command and answers it, through both over TLS.
    let mut env = TestEnv::with_urls(
        &url("localhost", &ca_query("verify-full", &ca)),
        &broker("localhost", &amqps_port),
    )
    .await;
    env.settings.amqp.ca_file = Some(ca.clone());
    env.fund(1, 500).await;
    let worker = env.start_worker();
    let mut client = env.client().await;
    let result = client.call(transfer("tls-1", 1, 2, 120)).await;
    assert_eq!(result["status"], json!("succeeded"), "{result}");
    assert_eq!(env.balance(2).await, 120);

    // The PHP client over TLS, checking the broker's certificate against the CA; with another
    // CA it does not connect, and nothing is sent.
    let mut vars = crate::php_client::transfer_vars(1, 2, 30, Some("tls-php"));
    vars.push(("PP_CA_FILE", ca.display().to_string()));
    let answer = crate::php_client::step(&env, "transfer", &vars).await;
    assert_eq!(answer["outcome"], "succeeded", "{answer}");
    assert_eq!(env.balance(2).await, 150);
    let mut vars = crate::php_client::transfer_vars(1, 2, 30, Some("tls-php-2"));
    vars.extend([
        ("PP_AMQP_URLS", broker("localhost", &amqps_port)),
        ("PP_NAMESPACE", env.settings.amqp.namespace.clone()),
        ("PP_CA_FILE", other_ca.display().to_string()),
    ]);
    let (status, stdout) =
        crate::php_client::run_php(&["tests/scenario.php", "transfer"], &vars).await;
    assert!(!status.success(), "{stdout}");
    assert!(stdout.contains("ConnectionFailed"), "{stdout}");
    assert_eq!(env.balance(2).await, 150);
    worker.stop().await;
    drop(services);
}
