//! `amdahl web` (the REST API and the UI) and `amdahl tokens` (who may use them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use amdahl_scheduler::{Clock, Store, SystemClock};
use amdahl_web::auth::{Role, hash, new_token};

use crate::output::table;

#[derive(clap::Args, Debug)]
pub struct WebArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub bind: SocketAddr,
    /// Where DAG files are looked up by id when the UI or API triggers a run
    #[arg(long, default_value = "dags", value_name = "DIR")]
    pub dags_folder: PathBuf,
    /// Show outputs' first rows (the task page's preview, the preview endpoint) to admin
    /// tokens only, not to viewers
    #[arg(long)]
    pub no_preview: bool,
}

/// Serves the API and the UI until Ctrl-C or SIGTERM.
pub async fn web(store: &Store, args: WebArgs) -> anyhow::Result<ExitCode> {
    serve(
        store,
        args.bind,
        args.dags_folder,
        !args.no_preview,
        crate::signals::shutdown_signal("web"),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds `bind` and serves until `shutdown` completes (also used by `amdahl standalone --web`).
pub async fn serve(
    store: &Store,
    bind: SocketAddr,
    dags_folder: PathBuf,
    viewer_previews: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let address = listener.local_addr()?;
    if store
        .tokens()
        .await?
        .iter()
        .all(|t| t.revoked_at_ms.is_some())
    {
        eprintln!(
            "note: there are no API tokens yet; make one with `amdahl tokens create --role admin`"
        );
    }
    eprintln!("web: the UI and the API (/api/v1) on http://{address}/");
    let state = amdahl_web::AppState {
        viewer_previews,
        ..amdahl_web::AppState::new(store.clone(), dags_folder)
    };
    amdahl_web::serve(listener, state, shutdown)
        .await
        .context("the web server stopped")
}

#[derive(clap::Subcommand, Debug)]
pub enum TokensCommand {
    /// Make a token; it is printed once (only its hash is stored)
    Create {
        /// `admin` (read and change) or `viewer` (read only)
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// What the token is for
        #[arg(long, default_value = "")]
        name: String,
    },
    /// The tokens, newest first (never the tokens themselves)
    List,
    /// Revoke a token: requests that carry it are refused from now on
    Revoke { token_id: i64 },
}

pub async fn tokens(store: &Store, command: TokensCommand) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now_ms();
    match command {
        TokensCommand::Create { role, name } => {
            let role = Role::parse(&role).context("the role is admin or viewer")?;
            let token = new_token().map_err(anyhow::Error::msg)?;
            let id = store
                .create_token(&name, role.name(), &hash(&token), now)
                .await?;
            eprintln!("token {id} ({}) made; it is shown only now:", role.name());
            println!("{token}");
        }
        TokensCommand::List => {
            let rows: Vec<Vec<String>> = store
                .tokens()
                .await?
                .into_iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.role,
                        t.name,
                        crate::output::timestamp(Some(t.created_at_ms)),
                        crate::output::timestamp(t.last_used_at_ms),
                        if t.revoked_at_ms.is_some() {
                            "revoked".into()
                        } else {
                            "live".into()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "ROLE", "NAME", "CREATED", "LAST USED", "STATE"],
                    &rows
                )
            );
        }
        TokensCommand::Revoke { token_id } => {
            if !store.revoke_token(token_id, now).await? {
                anyhow::bail!("no live token {token_id}; `amdahl tokens list` shows them");
            }
            println!("token {token_id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
