//! TLS to PostgreSQL as `sslmode` and `sslrootcert` ask, against a cluster of the test's own
//! whose certificate, for the name `localhost` only, is signed by a CA made here with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use webhook_inbox::clock::Clock;
use webhook_inbox::config::{StorageArgs, StoreUrl};
use webhook_inbox::store::{self, Store, StoreError, unobserved};

use crate::common::pg::Cluster;
use crate::common::skip::skip;

/// The cluster and the files of the CA that signed its certificate, and of another CA.
struct TlsCluster {
    cluster: Cluster,
    ca: PathBuf,
    other_ca: PathBuf,
}

/// One cluster for every test here, or why there is none.
fn tls_cluster() -> Result<&'static TlsCluster, &'static str> {
    static CLUSTER: OnceLock<Result<TlsCluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let mut authorities = None;
            let cluster = Cluster::start(
                |folder| {
                    authorities = Some(make_certificates(folder)?);
                    Ok(())
                },
                "-c ssl=on -c ssl_cert_file={folder}/certificates/server.crt -c ssl_key_file={folder}/certificates/server.key",
            )?;
            let (ca, other_ca) = authorities.ok_or("no certificates were made")?;
            Ok(TlsCluster { cluster, ca, other_ca })
        })
        .as_ref()
        .map_err(String::as_str)
}

fn openssl(folder: &Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(folder)
        .output()
        .map_err(|error| format!("openssl is not installed ({error})"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A CA, a server certificate for `localhost` signed by it, and a second CA, in
/// `folder/certificates`.
fn make_certificates(folder: &Path) -> Result<(PathBuf, PathBuf), String> {
    let certificates = folder.join("certificates");
    std::fs::create_dir_all(&certificates).map_err(|error| error.to_string())?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subject) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=webhook-inbox test {ca}"),
        );
        let mut args = vec![
            "req", "-x509", "-days", "2", "-subj", &subject, "-keyout", &key, "-out", &crt,
        ];
        args.extend(ec);
        args.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        openssl(&certificates, &args)?;
    }
    let mut request = vec![
        "req",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    request.extend(ec);
    openssl(&certificates, &request)?;
    std::fs::write(
        certificates.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|error| error.to_string())?;
    openssl(
        &certificates,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )?;
    // PostgreSQL refuses a key that others may read.
    restrict(&certificates.join("server.key"))?;
    Ok((certificates.join("ca.crt"), certificates.join("other-ca.crt")))
}

fn restrict(key: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).map_err(|error| error.to_string())
}

fn the_cluster() -> Option<&'static TlsCluster> {
    match tls_cluster() {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            skip("the PostgreSQL TLS tests", why);
            None
        }
    }
}

/// A URL of the cluster's `postgres` database through `host`, with `params`, and an
/// `application_name` of its own that tells its connections apart from the other tests'.
fn url(cluster: &TlsCluster, host: &str, params: &str) -> String {
    let port = cluster.cluster.url.rsplit(':').next().expect("a port");
    let name = format!("wi-tls-{}", uuid::Uuid::new_v4().simple());
    let joiner = if params.is_empty() { "" } else { "&" };
    format!("postgres://postgres@{host}:{port}/postgres?application_name={name}{joiner}{params}")
}

/// The `application_name` of a URL made by [`url`].
fn application(url: &str) -> &str {
    let start = url.find("application_name=").expect("named") + "application_name=".len();
    let rest = &url[start..];
    &rest[..rest.find('&').unwrap_or(rest.len())]
}

async fn open(url: String) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    store::open(
        &StorageArgs::with_url(StoreUrl::Postgres(url)),
        Clock::system(),
        unobserved(),
    )
    .await
}

/// Whether the connections of the store opened with `store_url` are encrypted, as the server
/// sees them.
async fn encrypted(cluster: &TlsCluster, store: &dyn Store, store_url: &str) -> bool {
    store.stats(None).await.expect("a read");
    let admin = url(cluster, "127.0.0.1", "sslmode=disable");
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&application(store_url)],
        )
        .await
        .expect("pg_stat_ssl");
    drop(client);
    let _ = connection.await;
    let (tls, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(all > 0, "the store holds no connection");
    tls == all
}

fn ca(cluster: &TlsCluster) -> String {
    format!("sslrootcert={}", cluster.ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_ca_and_the_host_name() {
    let Some(cluster) = the_cluster() else { return };
    let full = url(
        cluster,
        "localhost",
        &format!("sslmode=verify-full&{}", ca(cluster)),
    );
    let store = open(full.clone())
        .await
        .expect("localhost is the certificate's name, signed by the CA");
    assert!(encrypted(cluster, store.as_ref(), &full).await);
    store.shutdown().await;

    for (host, roots, why) in [
        (
            "127.0.0.1",
            ca(cluster),
            "the certificate does not name 127.0.0.1",
        ),
        (
            "localhost",
            format!("sslrootcert={}", cluster.other_ca.display()),
            "another CA",
        ),
        (
            "localhost",
            "sslrootcert=system".to_owned(),
            "the system does not trust the test CA",
        ),
    ] {
        let refused = open(url(cluster, host, &format!("sslmode=verify-full&{roots}"))).await;
        assert!(refused.is_err(), "{why}: opened anyway");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_checks_the_ca_but_not_the_host_name() {
    let Some(cluster) = the_cluster() else { return };
    for params in [
        format!("sslmode=verify-ca&{}", ca(cluster)),
        format!("sslmode=require&{}", ca(cluster)),
    ] {
        let store_url = url(cluster, "127.0.0.1", &params);
        let store = open(store_url.clone())
            .await
            .unwrap_or_else(|error| panic!("{params}: {error}"));
        assert!(encrypted(cluster, store.as_ref(), &store_url).await, "{params}");
        store.shutdown().await;
    }
    let refused = open(url(
        cluster,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", cluster.other_ca.display()),
    ))
    .await;
    assert!(refused.is_err(), "a certificate of another CA was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_and_require_encrypt_and_disable_does_not() {
    let Some(cluster) = the_cluster() else { return };
    for (params, tls) in [
        ("", true),
        ("sslmode=prefer", true),
        ("sslmode=require", true),
        ("sslmode=disable", false),
    ] {
        let store_url = url(cluster, "127.0.0.1", params);
        let store = open(store_url.clone())
            .await
            .unwrap_or_else(|error| panic!("{params:?}: {error}"));
        assert_eq!(
            encrypted(cluster, store.as_ref(), &store_url).await,
            tls,
            "{params:?}"
        );
        store.shutdown().await;
    }
}
