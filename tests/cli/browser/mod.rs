//! The web UI in a real headless Chromium (Debian's `chromium`, driven through `chromedriver`
//! by WebDriver): log in with a token, see the DAGs, trigger a run, watch it reach success
//! without reloading the page, open the graph, the Gantt chart and a task's logs. Screenshots
//! go to `target/browser-screenshots/`. Without Chromium the test fails (CI installs it);
//! `AMDAHL_TEST_SKIP_BROWSER=1` skips it explicitly.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::{Amdahl, Services, assert_success, text};

const DAG: &str = r#"
dag: browser_demo
description: two shell steps, slow enough to watch
params:
  who: world
  times: { default: 1, type: integer, minimum: 1, maximum: 3, description: how many greetings }
tasks:
  hello:
    shell: "sleep 1; echo hello {{ params.who }}"
  report:
    needs: [hello]
    shell: "sleep 1; echo reported"
  region:
    generate: { tpch: region, scale_factor: 0.01 }
  region_names:
    needs: [region]
    sql: "SELECT r_name FROM region WHERE r_regionkey < {{ params.times }} ORDER BY r_regionkey"
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// `chromedriver` on its own port, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An admin token, `amdahl standalone` (2 slots) on a DAG folder serving the UI, and
/// chromedriver: what the browser tests drive, stopped when dropped.
struct Ui {
    token: String,
    web: String,
    driver_port: u16,
    _services: Services,
    _driver: Driver,
}

impl Ui {
    fn start(amdahl: &Amdahl, dags: &Path, chromedriver: &Path) -> Ui {
        let created = amdahl.run(&["tokens", "create", "--role", "admin", "--name", "browser"]);
        assert_success(&created, "tokens create");
        let token = text(&created.stdout).trim().to_string();
        let web = format!("127.0.0.1:{}", free_port());
        let services = Services::start(
            amdahl,
            &[&[
                "standalone",
                "--slots",
                "2",
                "--dags-folder",
                &dags.display().to_string(),
                "--web",
                &web,
            ]],
        );
        let driver_port = free_port();
        let driver = Driver(
            Command::new(chromedriver)
                .arg(format!("--port={driver_port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        Ui {
            token,
            web,
            driver_port,
            _services: services,
            _driver: driver,
        }
    }
}

/// Waits until `check` gives a value, or fails with what `what` says after `limit`.
async fn until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn screenshot(client: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[test]
fn the_ui_logs_in_triggers_a_run_and_watches_it_live() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let amdahl = Amdahl::sqlite();
    let dags = tempfile::tempdir().unwrap();
    std::fs::write(dags.path().join("browser_demo.yaml"), DAG).unwrap();
    // A DAG too large to draw node by node.
    let mut wide = String::from("dag: wide\ntasks:\n");
    for i in 0..2000 {
        wide.push_str(&format!("  t{i}:\n    empty: {{}}\n"));
        if i >= 10 {
            wide.push_str(&format!("    needs: [t{}]\n", i / 10));
        }
    }
    std::fs::write(dags.path().join("wide.yaml"), wide).unwrap();
    let created = amdahl.run(&["tokens", "create", "--role", "admin", "--name", "browser"]);
    assert_success(&created, "tokens create");
    let token = text(&created.stdout).trim().to_string();
    let web_port = free_port();
    let web = format!("127.0.0.1:{web_port}");
    let _services = Services::start(
        &amdahl,
        &[&[
            "standalone",
            "--slots",
            "2",
            "--dags-folder",
            &dags.path().display().to_string(),
            "--web",
            &web,
        ]],
    );
    let driver_port = free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = session(&chromium, driver_port).await;
        let base = format!("http://{web}/");
        until(Duration::from_secs(20), "the web server", || async {
            client.goto(&base).await.ok()?;
            client.find(Locator::Css("#login")).await.ok()
        })
        .await;
        screenshot(&client, "1-login").await;

        // A wrong token is refused on the page; the right one logs in.
        client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys("amd_wrong")
            .await
            .unwrap();
        client
            .find(Locator::Css("#login button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let refused = until(Duration::from_secs(10), "the login error", || async {
            text_of(&client, "#login-error")
                .await
                .filter(|t| !t.is_empty())
        })
        .await;
        assert!(refused.contains("unknown or revoked token"), "{refused}");
        let input = client.find(Locator::Css("#token")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(&token).await.unwrap();
        client
            .find(Locator::Css("#login button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // The scheduler records the DAG folder; the list shows the DAG.
        until(Duration::from_secs(30), "the DAG in the list", || async {
            if client
                .find(Locator::Css("tr[data-dag='browser_demo']"))
                .await
                .is_ok()
            {
                return Some(());
            }
            client.goto(&base).await.ok()?;
            None
        })
        .await;
        assert!(text_of(&client, "#who").await.unwrap().contains("admin"));
        screenshot(&client, "2-dags").await;

        // Trigger from the DAG page, with a param.
        client
            .find(Locator::Css("tr[data-dag='browser_demo'] a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(Duration::from_secs(10), "the trigger form", || async {
            client.find(Locator::Css("#params")).await.ok()
        })
        .await;
        assert!(
            client
                .find(Locator::Css("#graph g[data-task='report']"))
                .await
                .is_ok()
        );
        assert!(text_of(&client, "#params").await.unwrap().contains("how many greetings"));
        // The form is typed: a number above its maximum is refused by the server, naming the
        // field; a valid one triggers the run.
        let field = |id: &'static str| {
            let client = client.clone();
            async move { client.find(Locator::Css(id)).await.unwrap() }
        };
        let who = field("#param-who").await;
        who.clear().await.unwrap();
        who.send_keys("browser").await.unwrap();
        let times = field("#param-times").await;
        times.clear().await.unwrap();
        times.send_keys("9").await.unwrap();
        field("#trigger").await.click().await.unwrap();
        let refused = until(Duration::from_secs(10), "the refused trigger", || async {
            text_of(&client, "#trigger-error")
                .await
                .filter(|t| !t.is_empty())
        })
        .await;
        assert_eq!(refused, "param `times` must be at most 3, found 9");
        times.clear().await.unwrap();
        times.send_keys("2").await.unwrap();
        // Marks this page load: if the run page reloaded, the mark would be gone.
        client
            .execute("window.amdahlMark = 42; return null;", vec![])
            .await
            .unwrap();
        client
            .find(Locator::Css("#trigger"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // The run page follows the run live until it succeeds.
        let states = until(Duration::from_secs(60), "the run to succeed", || async {
            let state = text_of(&client, "#run-state").await?;
            (state == "success").then_some(state)
        })
        .await;
        assert_eq!(states, "success");
        let mark = client
            .execute("return window.amdahlMark;", vec![])
            .await
            .unwrap();
        assert_eq!(mark, serde_json::json!(42), "the page was reloaded");
        let url = client.current_url().await.unwrap();
        assert!(
            url.fragment().unwrap_or_default().starts_with("/runs/"),
            "{url}"
        );
        for css in [
            "#graph g[data-task='hello']",
            "#gantt rect",
            "#gantt text[data-lane='CPU']",
            "#breakdown .bar",
            "tr[data-task='report']",
        ] {
            assert!(
                client.find(Locator::Css(css)).await.is_ok(),
                "{css} on the run page"
            );
        }
        let counts = text_of(&client, "#counts").await.unwrap();
        assert!(counts.contains("success"), "{counts}");
        screenshot(&client, "3-run").await;
        // Times are the browser's, with UTC on hover; the page has the icon.
        let title = client
            .find(Locator::Css("main p.note time"))
            .await
            .unwrap()
            .attr("title")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(title.ends_with(" UTC"), "{title}");
        assert!(
            client
                .find(Locator::Css("link[rel=icon]"))
                .await
                .is_ok(),
            "a favicon"
        );

        // The task page: attempts with where they ran, and the logs.
        client
            .find(Locator::Css("tr[data-task='hello'] a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let logs = until(Duration::from_secs(10), "the logs", || async {
            text_of(&client, "#logs")
                .await
                .filter(|t| t.contains("hello browser"))
        })
        .await;
        assert!(logs.contains("[1] hello browser"), "{logs}");
        // What the attempt ran, after templating (recorded when it ended).
        let rendered = until(Duration::from_secs(10), "the rendered command", || async {
            text_of(&client, "#rendered").await
        })
        .await;
        assert_eq!(rendered, "sleep 1; echo hello browser");
        assert!(text_of(&client, "#attempts").await.unwrap().contains("cpu"));
        assert_eq!(
            text_of(&client, "#attempts td.route").await.as_deref(),
            Some("cpu")
        );
        // "Why there" is never empty: a shell task says where its kind runs.
        assert_eq!(
            text_of(&client, "#attempts td.note").await.as_deref(),
            Some("shell stages run on the CPU")
        );
        assert!(text_of(&client, "#sizes").await.unwrap().starts_with("output"));
        assert!(
            text_of(&client, "#rule")
                .await
                .unwrap()
                .starts_with("runs when: all_success")
        );
        screenshot(&client, "4-task").await;

        // A TPC-H output's first rows, with its columns, on its task page.
        let run_page = url.fragment().unwrap_or_default().to_string();
        client
            .goto(&format!("{base}#{run_page}/tasks/region"))
            .await
            .unwrap();
        let preview = until(Duration::from_secs(10), "the output preview", || async {
            text_of(&client, "#preview").await.filter(|t| !t.is_empty())
        })
        .await;
        assert!(
            preview.starts_with("r_regionkey Int64") && preview.contains("AFRICA"),
            "{preview}"
        );
        let first_row = client
            .execute(
                "return [...document.querySelectorAll('#preview tr')[1].cells].map(c => c.textContent);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(first_row[0], serde_json::json!("0"));
        assert_eq!(first_row[1], serde_json::json!("AFRICA"));
        assert!(
            text_of(&client, "#preview-size")
                .await
                .unwrap()
                .starts_with("first 5 of 5 rows"),
        );
        screenshot(&client, "4b-preview").await;

        // A query's page: the SQL it ran after templating, keywords marked, and its plan.
        client
            .goto(&format!("{base}#{run_page}/tasks/region_names"))
            .await
            .unwrap();
        let rendered = until(Duration::from_secs(10), "the rendered query", || async {
            text_of(&client, "#rendered.sql").await
        })
        .await;
        assert_eq!(
            rendered,
            "SELECT r_name FROM region WHERE r_regionkey < 2 ORDER BY r_regionkey"
        );
        let keywords = client
            .execute(
                "return [...document.querySelectorAll('#rendered .keyword')].map(k => k.textContent);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            keywords,
            serde_json::json!(["SELECT", "FROM", "WHERE", "ORDER", "BY"])
        );
        let plan = client
            .execute(
                "return document.querySelector('#plan pre').textContent;",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            plan.as_str().is_some_and(|p| p.contains("SortExec")),
            "{plan}"
        );

        // The DAG list shows the run among the DAG's recent runs.
        client.goto(&format!("{base}#/")).await.unwrap();
        until(Duration::from_secs(10), "the run in the DAG list", || async {
            client
                .find(Locator::Css("tr[data-dag='browser_demo'] .recent .dot.success"))
                .await
                .ok()
        })
        .await;

        // The DAG page's grid of runs × tasks: a click on a cell opens that task of that run.
        client.goto(&format!("{base}#/dags/browser_demo")).await.unwrap();
        until(Duration::from_secs(10), "the grid", || async {
            client.find(Locator::Css("#grid-canvas")).await.ok()
        })
        .await;
        screenshot(&client, "5-dag-grid").await;
        client
            .execute(
                "const c = document.getElementById('grid-canvas'); const b = c.getBoundingClientRect(); \
                 c.dispatchEvent(new MouseEvent('click', {clientX: b.left + 90 + 7 + 14, clientY: b.top + 7, bubbles: true})); \
                 return null;",
                vec![],
            )
            .await
            .unwrap();
        until(Duration::from_secs(10), "the report task's page from the grid", || async {
            let url = client.current_url().await.ok()?;
            url.fragment()?.ends_with("/tasks/report").then_some(())
        })
        .await;

        // Clear the task: the service runs it again, and the run page follows it to success.
        // (The page redraws as events arrive, so find and click again until a click lands.)
        until(Duration::from_secs(10), "a click on Clear", || async {
            client.find(Locator::Css("#clear")).await.ok()?.click().await.ok()
        })
        .await;
        until(Duration::from_secs(60), "the cleared run to succeed again", || async {
            let attempts = client
                .execute(
                    "const row = document.querySelector(\"tr[data-task='report']\"); \
                     const state = document.getElementById('run-state'); \
                     return row && state ? [state.textContent, row.children[3].textContent] : null;",
                    vec![],
                )
                .await
                .ok()?;
            (attempts == serde_json::json!(["success", "2"])).then_some(())
        })
        .await;
        screenshot(&client, "6-cleared-run").await;
        assert!(
            text_of(&client, "#run-version")
                .await
                .unwrap()
                .starts_with("DAG version "),
            "the run page names the version it ran"
        );

        // The DAG file changes: the DAG page lists both versions and shows what changed.
        std::fs::write(
            dags.path().join("browser_demo.yaml"),
            DAG.replace("echo reported", "echo reported again"),
        )
        .unwrap();
        client.goto(&format!("{base}#/dags/browser_demo")).await.unwrap();
        until(Duration::from_secs(30), "the DAG's second version", || async {
            let rows = client
                .find_all(Locator::Css("#versions tr[data-version]"))
                .await
                .ok()?;
            if rows.len() >= 2 {
                return Some(());
            }
            client.refresh().await.ok()?;
            None
        })
        .await;
        assert!(
            text_of(&client, "#source")
                .await
                .unwrap()
                .contains("echo reported again"),
            "the page shows the current version's file"
        );
        client
            .find(Locator::Css("#compare"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let diff = until(Duration::from_secs(10), "the versions' diff", || async {
            text_of(&client, "#diff").await.filter(|t| t.contains("@@"))
        })
        .await;
        assert!(
            diff.contains("-    shell: \"sleep 1; echo reported\"")
                && diff.contains("+    shell: \"sleep 1; echo reported again\""),
            "{diff}"
        );
        screenshot(&client, "6b-versions").await;

        // A 2,000-task DAG's page draws its graph and grid on canvases.
        client.goto(&format!("{base}#/dags/wide")).await.unwrap();
        until(Duration::from_secs(30), "the large DAG's graph", || async {
            if client.find(Locator::Css("#graph-canvas")).await.is_ok() {
                return Some(());
            }
            // The scheduler may not have recorded it yet.
            client.refresh().await.ok()?;
            None
        })
        .await;
        assert_eq!(text_of(&client, "#grid").await.unwrap(), "No runs yet.");
        screenshot(&client, "7-large-dag").await;
        client.close().await.unwrap();
    });
}

/// Chromium and chromedriver, or `None` when `AMDAHL_TEST_SKIP_BROWSER=1` asks to skip.
fn browser() -> Option<(PathBuf, PathBuf)> {
    match (find("chromium"), find("chromedriver")) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ if std::env::var("AMDAHL_TEST_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("SKIPPED: browser test (AMDAHL_TEST_SKIP_BROWSER=1)");
            None
        }
        _ => panic!(
            "the browser test needs Debian's `chromium` and `chromium-driver` \
             (apt-get install chromium chromium-driver); set AMDAHL_TEST_SKIP_BROWSER=1 to skip it"
        ),
    }
}

/// A headless Chromium session through chromedriver on `driver_port`.
async fn session(chromium: &Path, driver_port: u16) -> Client {
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"]
        }
    });
    until(Duration::from_secs(20), "chromedriver", || async {
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .ok()
    })
    .await
}

/// Opens `base` once the web server answers and logs in with `token`.
async fn log_in(client: &Client, base: &str, token: &str) {
    until(Duration::from_secs(20), "the web server", || async {
        client.goto(base).await.ok()?;
        client.find(Locator::Css("#token")).await.ok()
    })
    .await
    .send_keys(token)
    .await
    .unwrap();
    client
        .find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

const ALERTING: &str = r#"
dag: alerting
params:
  hook: ""
on_failure:
  - webhook: { url: "{{ params.hook }}" }
tasks:
  load:
    shell: "echo the warehouse refused >&2; exit 3"
  cleanup:
    needs: [load]
    trigger: all_done
    shell: "echo cleaned"
  report:
    needs: [load]
    shell: "echo never"
  announce:
    when: "{{ params.hook == 'never' }}"
    shell: "echo never"
"#;

/// A failing task with an `all_done` cleanup and a webhook, in the browser: the run page shows
/// the failed, cleaned-up, upstream-failed and skipped tasks and the delivered notification;
/// the DAG list shows a red banner for a DAG file that stopped validating, and it goes away
/// once the file is fixed.
#[test]
fn the_ui_shows_a_failure_its_notification_and_import_errors() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let amdahl = Amdahl::sqlite();
    let hook = super::Hook::start();
    let dags = tempfile::tempdir().unwrap();
    std::fs::write(dags.path().join("alerting.yaml"), ALERTING).unwrap();
    // Runs only when backfilled (its schedule starts in 2099): the second year's `load` waits
    // for the first's, which fails.
    std::fs::write(
        dags.path().join("yearly.yaml"),
        "dag: yearly\nschedule: \"0 0 1 1 *\"\nstart_date: 2099-01-01\ndefaults: { retries: 0 }\n\
         tasks:\n  load:\n    depends_on_past: true\n    shell: \"exit 1\"\n",
    )
    .unwrap();
    std::fs::write(
        dags.path().join("slow.yaml"),
        "dag: slow\nrun_timeout: 1s\ndefaults: { retries: 0 }\ntasks:\n  wait:\n    shell: sleep 30\n",
    )
    .unwrap();
    let broken = dags.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "dag: broken\ntasks:\n  one:\n    shell: echo hi\n    retres: 2\n",
    )
    .unwrap();
    let ui = Ui::start(&amdahl, dags.path(), &chromedriver);
    let (token, web, driver_port) = (ui.token.clone(), ui.web.clone(), ui.driver_port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = session(&chromium, driver_port).await;
        let base = format!("http://{web}/");
        log_in(&client, &base, &token).await;

        // The broken file: a banner that says where, beside the DAG that loads.
        let banner = until(
            Duration::from_secs(30),
            "the import error banner",
            || async {
                if let Some(text) = text_of(&client, "#import-errors").await {
                    return Some(text);
                }
                client.refresh().await.ok()?;
                None
            },
        )
        .await;
        assert!(
            banner.contains(&format!("{}:5:5: unknown key `retres`", broken.display())),
            "{banner}"
        );
        assert!(
            client
                .find(Locator::Css("tr[data-dag='alerting']"))
                .await
                .is_ok()
        );
        screenshot(&client, "8-import-error").await;

        // A failing run, triggered from the command line with the webhook's address.
        let hook_param = format!("hook={}", hook.url);
        let triggered = amdahl.run(&["trigger", "alerting", "--param", &hook_param]);
        assert_success(&triggered, "trigger");
        client.goto(&format!("{base}#/runs/1")).await.unwrap();
        until(
            Duration::from_secs(60),
            "the failed run and its notification",
            || async {
                let state = text_of(&client, "#run-state").await?;
                let notes = text_of(&client, "#notifications").await?;
                (state == "failed" && notes.contains("delivered")).then_some(())
            },
        )
        .await;
        let row = |task: &'static str| {
            let client = &client;
            async move {
                text_of(client, &format!("tr[data-task='{task}'] td:nth-child(2)"))
                    .await
                    .unwrap_or_default()
            }
        };
        assert_eq!(row("load").await, "failed");
        assert_eq!(row("cleanup").await, "success");
        assert_eq!(row("report").await, "upstream_failed");
        assert_eq!(row("announce").await, "skipped");
        let notes = text_of(&client, "#notifications").await.unwrap();
        assert!(notes.contains(&format!("POST {}", hook.url)), "{notes}");
        assert!(notes.contains("run failure"), "{notes}");
        assert!(notes.contains("200"), "{notes}");
        assert_eq!(hook.requests().len(), 1);
        screenshot(&client, "9-failed-run-notified").await;

        // A run past its run_timeout: failed, and the run page says why.
        assert_success(&amdahl.run(&["trigger", "slow"]), "trigger slow");
        client.goto(&format!("{base}#/runs/2")).await.unwrap();
        let note = until(Duration::from_secs(30), "the timed-out run", || async {
            let state = text_of(&client, "#run-state").await?;
            let note = text_of(&client, "main p.note").await?;
            (state == "failed" && note.contains("run_timeout")).then_some(note)
        })
        .await;
        assert!(
            note.contains("the run timed out after 1s (run_timeout)"),
            "{note}"
        );
        screenshot(&client, "10-timed-out-run").await;

        // The runs list, filtered by DAG and state through its address; its selects show
        // the filter (read once the page for that filter is drawn, never a stale table).
        let rows = |dag: &'static str, state: &'static str| {
            let client = &client;
            let base = &base;
            async move {
                let mut query = Vec::new();
                if !dag.is_empty() {
                    query.push(format!("dag={dag}"));
                }
                if !state.is_empty() {
                    query.push(format!("state={state}"));
                }
                client
                    .goto(&format!("{base}#/runs?{}", query.join("&")))
                    .await
                    .unwrap();
                until(Duration::from_secs(10), "the filtered runs", || async {
                    let value = |css: &'static str| async move {
                        client
                            .find(Locator::Css(css))
                            .await
                            .ok()?
                            .prop("value")
                            .await
                            .ok()?
                    };
                    if value("#filter-dag").await? != dag || value("#filter-state").await? != state
                    {
                        return None;
                    }
                    let rows = client
                        .find_all(Locator::Css("#runs tr[data-run]"))
                        .await
                        .ok()?;
                    let mut ids = Vec::new();
                    for row in rows {
                        ids.push(row.attr("data-run").await.ok()??);
                    }
                    Some(ids)
                })
                .await
            }
        };
        assert_eq!(rows("", "failed").await, ["2", "1"]);
        assert_eq!(rows("alerting", "failed").await, ["1"]);
        assert!(rows("", "success").await.is_empty());
        assert!(rows("broken", "").await.is_empty());

        // depends_on_past: the second year's task waits for the first's, and says so.
        let backfill = amdahl.run(&[
            "backfill",
            "yearly",
            "--from",
            "2020-01-01",
            "--to",
            "2021-01-01",
            "--max-active-runs",
            "2",
        ]);
        assert_success(&backfill, "backfill");
        client
            .goto(&format!("{base}#/runs/4/tasks/load"))
            .await
            .unwrap();
        let rule = until(Duration::from_secs(30), "the waiting task", || async {
            client.refresh().await.ok()?;
            let rule = text_of(&client, "#rule").await?;
            rule.contains("waiting until").then_some(rule)
        })
        .await;
        assert!(rule.contains("depends_on_past"), "{rule}");
        assert_eq!(
            text_of(&client, "h1 .state").await.as_deref(),
            Some("scheduled")
        );
        screenshot(&client, "11-waiting-for-the-past").await;

        // Fixed: the banner goes.
        std::fs::write(&broken, "dag: broken\ntasks:\n  one:\n    shell: echo hi\n").unwrap();
        client.goto(&base).await.unwrap();
        until(Duration::from_secs(30), "the banner to go", || async {
            client.refresh().await.ok()?;
            client
                .find(Locator::Css("tr[data-dag='broken']"))
                .await
                .ok()?;
            client
                .find(Locator::Css("#import-errors"))
                .await
                .is_err()
                .then_some(())
        })
        .await;
        client.close().await.unwrap();
    });
}

/// Assets in the browser: an event posted through the REST API starts the DAG scheduled on
/// it; the assets page lists it with its producer and consumer; the asset's page shows the
/// event and the run it started; the run page says what started it; an admin posts another
/// event from the asset's page.
#[test]
fn an_asset_event_starts_a_dag_and_the_assets_page_shows_it() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let amdahl = Amdahl::sqlite();
    let dags = tempfile::tempdir().unwrap();
    std::fs::write(
        dags.path().join("ingest.yaml"),
        "dag: ingest\ntasks:\n  orders: { shell: \"echo loaded\", produces: lake.orders }\n",
    )
    .unwrap();
    std::fs::write(
        dags.path().join("report.yaml"),
        "dag: report\nschedule: { assets: [lake.orders] }\ntasks:\n  build: { shell: \"echo built\" }\n",
    )
    .unwrap();
    let ui = Ui::start(&amdahl, dags.path(), &chromedriver);
    let (token, web, driver_port) = (ui.token.clone(), ui.web.clone(), ui.driver_port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("http://{web}/");
        let client = session(&chromium, driver_port).await;
        log_in(&client, &base, &token).await;
        // The scheduler has read the folder once the DAG is listed.
        until(Duration::from_secs(30), "the DAG list", || async {
            if client
                .find(Locator::Css("tr[data-dag='report']"))
                .await
                .is_ok()
            {
                return Some(());
            }
            client.refresh().await.ok()?;
            None
        })
        .await;
        // An event posted through the REST API, from the page (with the token it holds).
        let posted = client
            .execute(
                "return fetch('/api/v1/assets/lake.orders/events', { method: 'POST', \
                   headers: { Authorization: `Bearer ${sessionStorage.getItem('amdahl-token')}`, \
                              'Content-Type': 'application/json' }, \
                   body: JSON.stringify({ extra: { rows: 1200 } }) }).then((r) => r.json());",
                vec![],
            )
            .await
            .unwrap();
        let event_id = posted["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("an event id in {posted}"));
        client
            .find(Locator::LinkText("Assets"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let row = until(Duration::from_secs(30), "the asset's row", || async {
            let row = text_of(&client, "tr[data-asset='lake.orders']").await?;
            if row.contains("report") {
                return Some(row);
            }
            client.refresh().await.ok()?;
            None
        })
        .await;
        assert!(row.contains("ingest.orders"), "{row}");
        assert!(row.contains("posted"), "{row}");

        client
            .find(Locator::Css("tr[data-asset='lake.orders'] a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let started = until(
            Duration::from_secs(30),
            "the run the event started",
            || async {
                let cell =
                    text_of(&client, &format!("tr[data-event='{event_id}'] td.started")).await?;
                if cell.starts_with("run ") {
                    return Some(cell);
                }
                client.refresh().await.ok()?;
                None
            },
        )
        .await;
        let extra = text_of(&client, &format!("tr[data-event='{event_id}'] td.extra"))
            .await
            .unwrap();
        assert_eq!(extra, r#"{"rows":1200}"#);
        screenshot(&client, "14-asset-page").await;

        // The run page says which event started it.
        client
            .find(Locator::Css(&format!(
                "tr[data-event='{event_id}'] td.started a"
            )))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let cause = until(Duration::from_secs(20), "the run's cause", || async {
            text_of(&client, "#run-cause").await
        })
        .await;
        assert_eq!(cause, format!("Started by lake.orders event {event_id}"));
        let run_id: i64 = started.trim_start_matches("run ").parse().unwrap();
        // The page may be drawn again (a live update) between finding the heading and reading
        // it: read it until it holds still.
        let heading = until(
            Duration::from_secs(10),
            "the run page's heading",
            || async { text_of(&client, "h1").await },
        )
        .await;
        assert!(
            heading.starts_with(&format!("Run {run_id} of report")),
            "{heading}"
        );

        // An admin posts an event from the asset's page: a second run.
        client
            .goto(&format!("{base}#/assets/lake.orders"))
            .await
            .unwrap();
        let extra = until(Duration::from_secs(10), "the post form", || async {
            client.find(Locator::Css("#event-extra")).await.ok()
        })
        .await;
        extra.send_keys("{\"rows\": 7}").await.unwrap();
        client
            .find(Locator::Css("#post-event"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(Duration::from_secs(30), "the second run", || async {
            let list = amdahl.run(&["runs", "list", "--dag", "report"]);
            (text(&list.stdout).matches("success").count() == 2).then_some(())
        })
        .await;
        client.close().await.unwrap();
    });
}

/// A mapped task in the UI: the run page lists each instance with its value and draws the
/// task as one node `×3`; the DAG's grid gives the task one cell counting its instances.
#[test]
fn a_mapped_tasks_instances_appear_in_the_run_page_and_the_grid() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let amdahl = Amdahl::sqlite();
    let dags = tempfile::tempdir().unwrap();
    std::fs::write(
        dags.path().join("mapped.yaml"),
        "dag: mapped\nparams:\n  codes: [a, b, c]\ntasks:\n  per_code:\n    map: { over: \"{{ params.codes }}\", as: code }\n    shell: \"echo {{ code }}\"\n  after: { needs: [per_code], shell: \"echo done\" }\n",
    )
    .unwrap();
    let ui = Ui::start(&amdahl, dags.path(), &chromedriver);
    let (token, web, driver_port) = (ui.token.clone(), ui.web.clone(), ui.driver_port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("http://{web}/");
        let client = session(&chromium, driver_port).await;
        log_in(&client, &base, &token).await;
        until(Duration::from_secs(30), "the DAG list", || async {
            if client
                .find(Locator::Css("tr[data-dag='mapped']"))
                .await
                .is_ok()
            {
                return Some(());
            }
            client.refresh().await.ok()?;
            None
        })
        .await;
        client.goto(&format!("{base}#/dags/mapped")).await.unwrap();
        until(Duration::from_secs(10), "the trigger button", || async {
            client.find(Locator::Css("#trigger")).await.ok()
        })
        .await
        .click()
        .await
        .unwrap();
        let state = until(Duration::from_secs(60), "the run to end", || async {
            let state = text_of(&client, "#run-state").await?;
            (state == "success").then_some(state)
        })
        .await;
        assert_eq!(state, "success");
        for (i, code) in ["a", "b", "c"].iter().enumerate() {
            let value = text_of(
                &client,
                &format!("tr[data-task='per_code[{i}]'] .map-value"),
            )
            .await
            .unwrap_or_else(|| panic!("no row for per_code[{i}]"));
            assert_eq!(value, format!("= {code}"));
        }
        let node = text_of(&client, "#graph g[data-task='per_code'] text")
            .await
            .unwrap();
        assert_eq!(node, "per_code ×3");
        assert!(
            client
                .find(Locator::Css("#graph g[data-task='per_code[0]']"))
                .await
                .is_err(),
            "instances are folded into their task in the graph"
        );
        screenshot(&client, "15-mapped-run").await;

        // The grid as the page fetches it, with the session's token.
        let fetch = |query: &str| {
            format!(
                "return fetch('/api/v1/dags/mapped/grid?{query}', {{ headers: {{ Authorization: \
                   `Bearer ${{sessionStorage.getItem('amdahl-token')}}` }} }}).then((r) => r.json());"
            )
        };
        let grid = client.execute(&fetch(""), vec![]).await.unwrap();
        assert_eq!(
            grid["tasks"],
            serde_json::json!(["per_code", "after"]),
            "{grid}"
        );
        let cell = &grid["runs"][0]["cells"][0];
        assert_eq!(cell["state"], "success", "{grid}");
        assert_eq!(
            cell["instances"],
            serde_json::json!({ "success": 3 }),
            "{grid}"
        );
        // A page of columns (as for a DAG wider than a screen) counts them the same way.
        let paged = client
            .execute(&fetch("tasks_limit=1"), vec![])
            .await
            .unwrap();
        assert_eq!(paged["tasks"], serde_json::json!(["per_code"]), "{paged}");
        assert_eq!(paged["next_tasks_from"], 1, "{paged}");
        assert_eq!(
            paged["runs"][0]["cells"][0]["instances"],
            serde_json::json!({ "success": 3 }),
            "{paged}"
        );
        let second = client
            .execute(&fetch("tasks_from=1&tasks_limit=1"), vec![])
            .await
            .unwrap();
        assert_eq!(second["tasks"], serde_json::json!(["after"]), "{second}");
        assert_eq!(second["runs"][0]["cells"][0]["state"], "success", "{second}");
        assert_eq!(
            second["runs"][0]["cells"][0]["instances"],
            serde_json::Value::Null,
            "{second}"
        );
        client.goto(&format!("{base}#/dags/mapped")).await.unwrap();
        until(Duration::from_secs(10), "the grid", || async {
            client.find(Locator::Css("#grid-canvas")).await.ok()
        })
        .await;
        screenshot(&client, "16-mapped-grid").await;
        client.close().await.unwrap();
    });
}
