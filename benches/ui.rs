//! How fast the web UI's heaviest pages are in a real browser: a DAG of 10,000 tasks (its
//! graph) and a DAG with 10,000 runs (its page of the grid), each opened in headless Chromium
//! against `amdahl web` on a SQLite store filled directly; the time from navigation until the
//! page has drawn (the canvas is in the page), several times each.
//!
//! ```sh
//! cargo bench --bench ui --profile dev    # needs chromium and chromedriver
//! ```

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use amdahl_scheduler::runs::{RunOrigin, create_run};
use amdahl_scheduler::{Store, SystemClock};

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let home = tempfile::tempdir().unwrap();
    let dags = home.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let mut wide = String::from("dag: wide\ntasks:\n");
    for i in 0..10_000 {
        wide.push_str(&format!("  t{i}:\n    empty: {{}}\n"));
        if i >= 10 {
            wide.push_str(&format!("    needs: [t{}]\n", i / 10));
        }
    }
    std::fs::write(dags.join("wide.yaml"), &wide).unwrap();
    std::fs::write(
        dags.join("many.yaml"),
        "dag: many\ntasks:\n  a:\n    empty: {}\n  b:\n    needs: [a]\n    empty: {}\n",
    )
    .unwrap();
    let url = format!("sqlite://{}", home.path().join("state.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let params = Default::default();
        let wide = amdahl_dags::load_file(&dags.join("wide.yaml")).unwrap();
        create_run(&store, &SystemClock, &wide, &params, RunOrigin::Manual)
            .await
            .unwrap();
        let many = amdahl_dags::load_file(&dags.join("many.yaml")).unwrap();
        for _ in 0..10_000 {
            create_run(&store, &SystemClock, &many, &params, RunOrigin::Manual)
                .await
                .unwrap();
        }
        store.close().await;
    });
    eprintln!(
        "filled the store in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let amdahl = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_amdahl"));
        cmd.args(args)
            .env("AMDAHL_HOME", home.path())
            .env("AMDAHL_DATABASE_URL", &url);
        cmd
    };
    let token = String::from_utf8(
        amdahl(&["tokens", "create", "--role", "viewer"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let web = format!("127.0.0.1:{}", free_port());
    let driver_port = free_port();
    let _processes = Processes(vec![
        amdahl(&[
            "web",
            "--bind",
            &web,
            "--dags-folder",
            &dags.display().to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)"),
    ]);
    rt.block_on(async {
        let capabilities = serde_json::json!({"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1400,1000"]}});
        let mut client = None;
        for _ in 0..100 {
            if let Ok(c) = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.as_object().unwrap().clone())
                .connect(&format!("http://127.0.0.1:{driver_port}"))
                .await
            {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = client.expect("chromedriver answers");
        let base = format!("http://{web}/");
        for _ in 0..100 {
            if client.goto(&base).await.is_ok() && client.find(Locator::Css("#login")).await.is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client
            .execute(
                &format!("sessionStorage.setItem('amdahl-token', '{token}'); return null;"),
                vec![],
            )
            .await
            .unwrap();
        println!("| page | runs | min ms | median ms | max ms |\n|---|---:|---:|---:|---:|");
        for (name, hash, done) in [
            (
                "10,000-task DAG: graph and grid",
                "#/dags/wide",
                "#graph-canvas",
            ),
            (
                "DAG with 10,000 runs: grid page and graph",
                "#/dags/many",
                "#grid-canvas",
            ),
            ("run of 10,000 tasks", "#/runs/1", "#graph-canvas"),
        ] {
            let mut times = Vec::new();
            for _ in 0..5 {
                client.goto("about:blank").await.unwrap();
                let started = Instant::now();
                client.goto(&format!("{base}{hash}")).await.unwrap();
                loop {
                    if client.find(Locator::Css(done)).await.is_ok() {
                        break;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "{name} never drew"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "| {name} | 5 | {:.0} | {:.0} | {:.0} |",
                times[0], times[2], times[4]
            );
        }
        client.close().await.unwrap();
    });
}
