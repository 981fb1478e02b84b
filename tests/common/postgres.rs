//! The PostgreSQL the shared store's tests run against: tests/run.sh starts a throw-away
//! cluster and exports `PATGATE_TEST_POSTGRES_URL`; each test makes a database of its own,
//! so tests run in parallel. Without the variable a test fails (it never skips).

use rand_core::{OsRng, RngCore as _};

/// The cluster's superuser connection string.
pub fn admin_url() -> String {
    std::env::var("PATGATE_TEST_POSTGRES_URL").expect(
        "PATGATE_TEST_POSTGRES_URL is not set: run the tests with tests/run.sh, which starts a throw-away PostgreSQL (or set it to a superuser's connection string)",
    )
}

/// The CA of the cluster's TLS certificate (tests/run.sh makes it).
pub fn ca_file() -> String {
    std::env::var("PATGATE_TEST_POSTGRES_CA")
        .expect("PATGATE_TEST_POSTGRES_CA is not set: run the tests with tests/run.sh")
}

/// A new, empty database; answers its connection string.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
    tokio::spawn(connection);
    let name = format!("patgate_test_{:016x}", OsRng.next_u64());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

/// Runs one SQL statement on the database at `url` (to look at what patgate wrote).
pub async fn query(url: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query(sql, &[]).await.unwrap()
}
