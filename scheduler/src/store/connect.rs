//! How a process connects to PostgreSQL: how many connections it keeps, when a pooled one is
//! tested before use, and whether a server on this machine is reached with TLS.
//!
//! A URL naming this machine (`localhost`, `127.0.0.1`, `::1`) that says nothing about TLS
//! (no `sslmode` in the URL, no `PGSSLMODE`) is first tried without it: on the loopback TLS
//! protects nothing, costs a handshake per connection, and with sqlx 0.9.0 (which leaves
//! Nagle's algorithm on) turns statements into ~40 ms stalls. A server that refuses a plain
//! connection (`hostssl` lines only) is then reached as the URL says (`prefer`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use super::{Result, sqlx_transient};

/// How many connections a process keeps to the store at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections(u32);

impl Connections {
    /// A command a person types: it runs its statements one after another on one connection
    /// (one that waits for a run also listens, on a connection of its own: see `events`).
    pub const COMMAND: Connections = Connections(1);
    /// A service without slots (the scheduler, the web server).
    pub const SERVICE: Connections = Connections(8);
    /// The most a worker asks for, below PostgreSQL's default `max_connections` (100) with
    /// room for a scheduler, a web server and a second worker.
    const MOST: u32 = 40;

    /// A process running `slots` tasks at once: every task may report its end while the
    /// worker claims and renews its leases, so the pool follows the slots (with
    /// four for the worker itself) rather than making 64 slots queue on 8 connections.
    pub fn for_slots(slots: usize) -> Connections {
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        Connections(slots.saturating_add(4).clamp(Self::SERVICE.0, Self::MOST))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Connections {
    fn default() -> Self {
        Connections::SERVICE
    }
}

/// A pool to the PostgreSQL server `url` names, and the options it connected with (see the
/// module's documentation for TLS).
pub(super) async fn postgres(
    url: &str,
    connections: Connections,
) -> Result<(PgPool, PgConnectOptions)> {
    let given = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(connections.get())
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings a connection when it goes back to the pool (in the background) and, by
        // default, again when it is taken out: a round trip before every statement, and on a
        // command's one connection two (the next statement waits for the release's ping).
        // A connection that answered its release ping a moment ago is trusted as it is; one
        // idle for longer is pinged first, so that connections left dead by a server restart
        // are still found and replaced before a statement meets them.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= TRUSTED_IDLE {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        });
    let tls_unasked = !names_ssl_mode(url) && std::env::var_os("PGSSLMODE").is_none();
    if tls_unasked && is_loopback(&given) {
        let plain = given.clone().ssl_mode(PgSslMode::Disable);
        match pool.clone().connect_with(plain.clone()).await {
            Ok(pool) => return Ok((pool, plain)),
            // The server is not there (or not ready): reaching it with TLS would fail too,
            // and the caller decides whether to wait.
            Err(e) if sqlx_transient(&e) => return Err(e.into()),
            // Refused without TLS (e.g. `hostssl` lines only): as the URL says.
            Err(_) => {}
        }
    }
    Ok((pool.connect_with(given.clone()).await?, given))
}

/// How long a pooled connection may have been idle and still be used without a ping first
/// (see [`postgres`]). A server that restarts is down for longer than this, so its dead
/// connections have all been idle longer by the time it answers again.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// Whether the URL's query sets `sslmode` (or sqlx's spelling `ssl-mode`).
fn names_ssl_mode(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            key.eq_ignore_ascii_case("sslmode") || key.eq_ignore_ascii_case("ssl-mode")
        })
    })
}

/// A TCP connection to this machine (not a Unix socket, which never uses TLS).
fn is_loopback(options: &PgConnectOptions) -> bool {
    if options.get_socket().is_some() {
        return false;
    }
    let host = options
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_url_that_names_no_ssl_mode_is_left_to_choose() {
        assert!(!names_ssl_mode("postgres://u@127.0.0.1/db"));
        assert!(!names_ssl_mode(
            "postgres://u@127.0.0.1/db?application_name=x"
        ));
        assert!(names_ssl_mode("postgres://u@127.0.0.1/db?sslmode=require"));
        assert!(names_ssl_mode(
            "postgres://u@h/db?application_name=x&SSLMODE=prefer"
        ));
        assert!(names_ssl_mode("postgres://u@h/db?ssl-mode=disable"));
        assert!(!names_ssl_mode("postgres://u@h/sslmode"));
    }

    #[test]
    fn loopback_hosts_are_this_machine_and_others_are_not() {
        let host = |url: &str| is_loopback(&PgConnectOptions::from_str(url).unwrap());
        assert!(host("postgres://u@127.0.0.1:5432/db"));
        assert!(host("postgres://u@localhost/db"));
        assert!(host("postgres://u@[::1]:5432/db"));
        assert!(host("postgres://u@127.0.0.2/db"));
        assert!(!host("postgres://u@db.example.com/db"));
        assert!(!host("postgres://u@10.0.0.5/db"));
        assert!(!host("postgres://u@localhost/db?host=/var/run/postgresql"));
    }

    #[test]
    fn a_pool_follows_the_slots_within_bounds() {
        assert_eq!(Connections::for_slots(1), Connections::SERVICE);
        assert_eq!(Connections::for_slots(16).get(), 20);
        assert_eq!(Connections::for_slots(64).get(), 40);
        assert_eq!(Connections::for_slots(usize::MAX).get(), 40);
    }
}
