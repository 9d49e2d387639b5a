//! How processes connect to the store and hear from each other.

use std::time::Duration;

use amdahl_scheduler::store::{Connections, Store, Topic};
use sqlx::Connection;

use crate::support::TestDb;

/// What the server says about the connections open to `database`: (TLS, count).
async fn backends(admin_url: &str, database: &str) -> Vec<bool> {
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let rows: Vec<(bool,)> = sqlx::query_as(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1",
    )
    .bind(database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    admin.close().await.ok();
    rows.into_iter().map(|(ssl,)| ssl).collect()
}

/// A command against a server on this machine, with a URL that says nothing about TLS, runs
/// all its statements on one connection without TLS, and listens on one more; a URL that asks
/// for TLS gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_on_this_machine_is_reached_without_tls_on_one_connection() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (address, _) = db.url.split_once('?').unwrap_or((&db.url, ""));
    assert!(
        address.contains("@127.0.0.1") || address.contains("@localhost"),
        "this test needs AMDAHL_TEST_POSTGRES_URL to name a server on this machine: {address}"
    );
    let database = address.rsplit('/').next().unwrap().to_string();
    let admin_url = std::env::var("AMDAHL_TEST_POSTGRES_URL").unwrap();

    let store = Store::connect_with(address, Connections::COMMAND)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    for _ in 0..5 {
        store.list_dags().await.unwrap();
        store.pools().await.unwrap();
    }
    assert_eq!(
        backends(&admin_url, &database).await,
        vec![false],
        "one connection, without TLS"
    );

    // Waiting for a signal takes a listening connection of its own, one for the process
    // however many wait, and hears another process's signals.
    let mut waiters = Vec::new();
    for _ in 0..3 {
        waiters.push(store.subscribe(Topic::Progress).await.unwrap());
    }
    assert_eq!(backends(&admin_url, &database).await, vec![false, false]);
    let other = Store::connect(address).await.unwrap();
    other.signal(Topic::Progress).await;
    for waiter in &mut waiters {
        assert!(
            waiter.wait(Duration::from_secs(5)).await,
            "the signal arrived"
        );
    }
    other.close().await;
    store.close().await;

    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let (ssl,): (String,) = sqlx::query_as("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    admin.close().await.ok();
    if ssl == "on" {
        let store =
            Store::connect_with(&format!("{address}?sslmode=require"), Connections::COMMAND)
                .await
                .unwrap();
        store.list_dags().await.unwrap();
        assert_eq!(backends(&admin_url, &database).await, vec![true]);
        store.close().await;
    } else {
        eprintln!("the server has TLS off: `sslmode=require` cannot be checked here");
    }
    db.drop_database().await;
}

/// Two processes on one SQLite file (two stores, as `amdahl scheduler` and `amdahl worker`
/// are): a waiter in one wakes when the other signals, and not when nothing was signalled,
/// nor a second time for a signal of its own process (which its channel already carried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_processes_on_one_file_wake_each_other() {
    let db = TestDb::sqlite().await;
    let waiting = db.store().await;
    let writing = db.store().await;
    let mut queued = waiting.subscribe(Topic::Queued).await.unwrap();
    let mut progress = writing.subscribe(Topic::Progress).await.unwrap();
    assert!(
        !queued.wait(Duration::from_millis(200)).await,
        "woken with nothing signalled"
    );
    writing.set_pool("db", 2, "", 1_000).await.unwrap();
    writing.signal(Topic::Queued).await;
    assert!(queued.wait(Duration::from_secs(5)).await, "never woken");
    assert!(
        !progress.wait(Duration::from_millis(100)).await,
        "woken by a topic nobody signalled"
    );
    // Its own signal wakes a process once, through its channel; the shared file does not
    // bring it back.
    waiting.signal(Topic::Queued).await;
    assert!(
        queued.wait(Duration::from_secs(1)).await,
        "own signal heard"
    );
    assert!(
        !queued.wait(Duration::from_millis(200)).await,
        "its own signal came back"
    );
    // Writes alone wake nobody, whichever process makes them.
    waiting.set_pool("db", 3, "", 2_000).await.unwrap();
    assert!(
        !queued.wait(Duration::from_millis(200)).await,
        "woken by a write"
    );
    writing.close().await;
    waiting.close().await;
}

/// Closing a store that listens ends its listening connection too: nothing is left open on
/// the server, and the close does not wait for the listener's next look (5 s; the bound
/// here is 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_closing_a_listening_store_leaves_no_connection_open() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let database = db
        .url
        .split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let admin_url = std::env::var("AMDAHL_TEST_POSTGRES_URL").unwrap();
    let store = Store::connect_with(&db.url, Connections::COMMAND)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mut waiter = store.subscribe(Topic::Queued).await.unwrap();
    assert!(!waiter.wait(Duration::from_millis(50)).await);
    assert_eq!(backends(&admin_url, &database).await.len(), 2);
    tokio::time::timeout(Duration::from_secs(2), store.close())
        .await
        .expect("the store closed while its listener was waiting");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !backends(&admin_url, &database).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(waiter);
    db.drop_database().await;
}
