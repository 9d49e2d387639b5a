//! Stopping services cleanly: the first Ctrl-C or SIGTERM.

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal(what: &'static str) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    eprintln!("{what}: shutting down");
}
