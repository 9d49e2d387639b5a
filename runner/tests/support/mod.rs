//! Fresh databases for tests: a SQLite file in a temp folder, or a new PostgreSQL database.

use std::sync::atomic::{AtomicUsize, Ordering};

use amdahl_scheduler::Store;
use sqlx::Connection;

pub struct TestDb {
    pub url: String,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        TestDb {
            url,
            admin_url: None,
            name: None,
            _dir: Some(dir),
        }
    }

    /// A new, empty database on the server named by `AMDAHL_TEST_POSTGRES_URL`. `None` only
    /// when `AMDAHL_TEST_SKIP_POSTGRES=1` explicitly asks to skip.
    pub async fn postgres() -> Option<TestDb> {
        let Ok(admin_url) = std::env::var("AMDAHL_TEST_POSTGRES_URL") else {
            if std::env::var("AMDAHL_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
                eprintln!("SKIPPED: PostgreSQL test (AMDAHL_TEST_SKIP_POSTGRES=1)");
                return None;
            }
            panic!(
                "PostgreSQL tests need AMDAHL_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres); \
                 set AMDAHL_TEST_SKIP_POSTGRES=1 to skip them explicitly"
            );
        };
        let name = format!(
            "amdahl_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to AMDAHL_TEST_POSTGRES_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        admin.close().await.ok();
        // Same server and options (`?sslmode=…`), another database.
        let (address, options) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(a, o)| (a, Some(o)));
        let base = address.rsplit_once('/').map_or(address, |(b, _)| b);
        let url = match options {
            Some(options) => format!("{base}/{name}?{options}"),
            None => format!("{base}/{name}"),
        };
        Some(TestDb {
            url,
            admin_url: Some(admin_url),
            name: Some(name),
            _dir: None,
        })
    }

    /// Connects and migrates.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    pub async fn drop_database(self) {
        if let (Some(admin_url), Some(name)) = (&self.admin_url, &self.name)
            && let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
    }
}
