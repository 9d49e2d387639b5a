//! Where Amdahl keeps things, resolved once from flags and the environment.
//!
//! **Invariant:** this is the only place the binary reads environment variables (clap reads
//! `AMDAHL_DATABASE_URL`, `AMDAHL_HOME` and `AMDAHL_DATA_ROOT`; this reads `XDG_DATA_HOME`
//! and `HOME`; object storage clients read their own, see `amdahl_executors::objects`).

use std::path::PathBuf;

use anyhow::{Context, bail};

use amdahl_dags::Location;
use amdahl_executors::storage::DataRoot;

pub struct Settings {
    pub database_url: String,
    /// Where task outputs live: `<home>/data`, another folder, or a prefix in object storage
    /// (with `<home>/data` as this machine's scratch).
    pub data_root: DataRoot,
}

impl Settings {
    pub fn resolve(
        database_url: Option<String>,
        home: Option<PathBuf>,
        data_root: Option<String>,
    ) -> anyhow::Result<Settings> {
        let home = match home {
            Some(h) => h,
            None => default_home()?,
        };
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create the Amdahl home {}", home.display()))?;
        let home = std::fs::canonicalize(&home).unwrap_or(home);
        let database_url = match database_url {
            Some(url) if !url.trim().is_empty() => url,
            _ => format!("sqlite://{}", home.join("amdahl.db").display()),
        };
        let scratch = home.join("data");
        let data_root = match data_root.filter(|r| !r.trim().is_empty()) {
            None => DataRoot::local(scratch),
            Some(text) => {
                let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
                match Location::parse(text.trim(), &here)
                    .map_err(|e| anyhow::anyhow!("--data-root `{text}`: {e}"))?
                {
                    Location::Local(path) => DataRoot::local(path),
                    Location::Object(object) => DataRoot {
                        local: scratch,
                        shared: Some(object),
                    },
                }
            }
        };
        Ok(Settings {
            database_url,
            data_root,
        })
    }
}

/// The state store's URL if one is configured or the default SQLite file already exists;
/// creates nothing (for commands that only read, when there is something to read).
pub fn existing_database_url(
    database_url: Option<String>,
    home: Option<PathBuf>,
) -> Option<String> {
    if let Some(url) = database_url.filter(|u| !u.trim().is_empty()) {
        return Some(url);
    }
    let home = match home {
        Some(h) => h,
        None => default_home().ok()?,
    };
    let file = home.join("amdahl.db");
    file.exists()
        .then(|| format!("sqlite://{}", file.display()))
}

fn default_home() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("amdahl"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/amdahl")),
        None => bail!("cannot find a home folder: set AMDAHL_HOME or pass --home"),
    }
}

/// A database URL fit for messages: the password, if any, is hidden.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
