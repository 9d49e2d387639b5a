//! The REST API end to end over a real state store (SQLite and PostgreSQL): every endpoint,
//! its auth failures and its bad inputs (4xx with a clear message, never a 500), with runs made
//! by the real in-process runner.

#[path = "../../runner/tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use amdahl_executors::{CpuRuntime, Executors};
use amdahl_runner::{LocalRunner, Quiet};
use amdahl_scheduler::{Clock, Store, SystemClock};
use amdahl_web::auth::{hash, new_token};
use amdahl_web::{AppState, router};

use support::TestDb;

const DAG: &str = r#"
dag: greet
description: says hello
params:
  who: world
tasks:
  hello:
    shell: "echo hello {{ params.who }}; echo to stderr >&2"
  after:
    needs: [hello]
    shell: "echo done"
"#;

struct Api {
    state: AppState,
    admin: String,
    viewer: String,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new(store: Store) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let dags = dir.path().join("dags");
        std::fs::create_dir_all(&dags).unwrap();
        std::fs::write(dags.join("greet.yaml"), DAG).unwrap();
        let token = |role: &'static str| {
            let store = store.clone();
            async move {
                let token = new_token().unwrap();
                store
                    .create_token("test", role, &hash(&token), SystemClock.now_ms())
                    .await
                    .unwrap();
                token
            }
        };
        let admin = token("admin").await;
        let viewer = token("viewer").await;
        Api {
            state: AppState::new(store, dags),
            admin,
            viewer,
            _dir: dir,
        }
    }

    /// Runs the DAG to the end in this process (as `amdahl run` does); the run's id.
    async fn finished_run(&self) -> i64 {
        self.finished_run_of("greet.yaml").await
    }

    /// Runs the DAG file `name` of the DAG folder to the end in this process.
    async fn finished_run_of(&self, name: &str) -> i64 {
        let dag = amdahl_dags::load_file(&self.state.dags_folder.join(name)).unwrap();
        let runner = LocalRunner {
            store: self.state.store.clone(),
            executors: Executors::new(CpuRuntime::new(1).unwrap()),
            data_root: amdahl_executors::storage::DataRoot::local(self._dir.path().join("data")),
            owner: "test:1:1".into(),
            clock: Arc::new(SystemClock),
            profile: None,
        };
        let params = amdahl_dags::params::resolve(&dag, &[]).unwrap();
        let run_id = runner.create_run(&dag, &params).await.unwrap();
        runner
            .drive(&dag, run_id, &Quiet, std::future::pending())
            .await
            .unwrap();
        run_id
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        self.send(method, path, token, body, &[]).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let typed = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("Content-Type"));
        if body.is_some() && !typed {
            request = request.header("Content-Type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Body::from(body.unwrap_or_default().to_string()))
            .unwrap();
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }
}

fn error(value: &Value) -> &str {
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {value}"))
}

async fn every_endpoint_answers_and_refuses_clearly(store: Store) {
    let api = Api::new(store).await;
    let run_id = api.finished_run().await;
    let (admin, viewer) = (Some(api.admin.as_str()), Some(api.viewer.as_str()));

    // Auth: no token, a malformed header, an unknown token.
    let (status, body) = api.call("GET", "/api/v1/dags", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error(&body).contains("amdahl tokens create"));
    let (status, _) = api
        .send(
            "GET",
            "/api/v1/dags",
            None,
            None,
            &[("Authorization", "Basic abc")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api
        .call("GET", "/api/v1/dags", Some("amd_nope"), None)
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::UNAUTHORIZED, "unknown or revoked token")
    );

    // How long the finished run's two tasks waited to be claimed.
    let (_, metrics) = api.call("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("amdahl_claim_latency_seconds_count 2")
            && metrics.contains("amdahl_claim_latency_seconds{quantile=\"0.99\"} "),
        "{metrics}"
    );

    let (status, me) = api.call("GET", "/api/v1/me", viewer, None).await;
    assert_eq!(
        (status, me["role"].as_str()),
        (StatusCode::OK, Some("viewer"))
    );
    let used: Vec<(String, Option<i64>)> = api
        .state
        .store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.role, t.last_used_at_ms))
        .collect();
    assert!(
        used.iter()
            .any(|(role, at)| role == "viewer" && at.is_some()),
        "{used:?}"
    );
    assert!(
        used.iter()
            .any(|(role, at)| role == "admin" && at.is_none()),
        "{used:?}"
    );

    // DAGs: the in-process run recorded the DAG.
    let (status, dags) = api.call("GET", "/api/v1/dags", viewer, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dags[0]["dag_id"], "greet");
    assert_eq!(dags[0]["last_run_state"], "success");
    assert_eq!(dags[0]["recent_run_states"], json!(["success"]));
    assert_eq!(dags[0]["next_run_at_ms"], Value::Null);
    let (status, dag) = api.call("GET", "/api/v1/dags/greet", viewer, None).await;
    assert_eq!(status, StatusCode::OK, "{dag}");
    assert_eq!(dag["description"], "says hello");
    assert_eq!(dag["tasks"][1]["needs"], json!(["hello"]));
    assert_eq!(dag["params"]["who"], "world");
    assert_eq!(dag["runs"][0]["run_id"], run_id);
    let (status, body) = api.call("GET", "/api/v1/dags/nope", viewer, None).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::NOT_FOUND, "no DAG `nope`")
    );

    // Runs, one run, its logs.
    let (status, runs) = api
        .call("GET", "/api/v1/runs?dag=greet&limit=5", viewer, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    // By state: the successful run, and no failed one.
    for (filter, count) in [("success", 1), ("failed", 0)] {
        let (status, runs) = api
            .call(
                "GET",
                &format!("/api/v1/runs?dag=greet&state={filter}"),
                viewer,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(runs.as_array().unwrap().len(), count, "{filter}");
    }
    let (status, body) = api
        .call("GET", "/api/v1/runs?state=done", viewer, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&body).contains("`state` must be one of queued, running"),
        "{body}"
    );
    for bad in [
        "/api/v1/runs?limit=0",
        "/api/v1/runs?limit=5000",
        "/api/v1/runs?limit=x",
        "/api/v1/runs?color=red",
    ] {
        let (status, body) = api.call("GET", bad, viewer, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(!error(&body).is_empty());
    }
    let (status, detail) = api
        .call("GET", &format!("/api/v1/runs/{run_id}"), viewer, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["run"]["state"], "success");
    assert_eq!(detail["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(detail["attempts"][0]["device"], "cpu");
    assert_eq!(detail["counts"], json!({"success": 2}));
    assert_eq!(detail["task_count"], 2);
    assert_eq!(detail["next_tasks_from"], Value::Null);
    // A page of one task: its attempts only, and where the next page starts.
    let (status, page) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}?tasks_limit=1"),
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(page["tasks"][0]["task_id"], "hello");
    assert!(
        page["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["task_id"] == "hello")
    );
    assert_eq!(page["next_tasks_from"], 1);
    assert_eq!(page["counts"], json!({"success": 2}));
    let (_, page) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}?tasks_from=1&tasks_limit=1"),
            viewer,
            None,
        )
        .await;
    assert_eq!(page["tasks"][0]["task_id"], "after");
    assert_eq!(page["attempts"][0]["task_id"], "after");
    assert_eq!(page["next_tasks_from"], Value::Null);
    for bad in [
        "tasks_limit=0",
        "tasks_limit=1001",
        "tasks_from=-1",
        "tasks_from=x",
        "page=2",
    ] {
        let (status, body) = api
            .call("GET", &format!("/api/v1/runs/{run_id}?{bad}"), viewer, None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(!error(&body).is_empty());
    }
    let (_, body) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}?tasks_limit=0"),
            viewer,
            None,
        )
        .await;
    assert_eq!(
        error(&body),
        "`tasks_limit` must be between 1 and 1000, found 0"
    );
    // One task: its attempts and what it read.
    let (status, task) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}/tasks/after"),
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["task"]["state"], "success");
    assert_eq!(
        task["task"]["trigger"], "all_success",
        "the default trigger rule"
    );
    assert_eq!(task["run"]["run_id"], run_id);
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(task["attempts"][0]["task_id"], "after");
    assert_eq!(task["inputs"][0]["task_id"], "hello");
    let (status, body) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}/tasks/nope"),
            viewer,
            None,
        )
        .await;
    assert_eq!(
        (status, error(&body).to_string()),
        (
            StatusCode::NOT_FOUND,
            format!("no task `nope` in run {run_id}")
        )
    );
    let (status, body) = api.call("GET", "/api/v1/runs/999999", viewer, None).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::NOT_FOUND, "no run 999999")
    );
    let (status, body) = api.call("GET", "/api/v1/runs/abc", viewer, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).contains("abc"), "{body}");
    let (status, logs) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}/tasks/hello/logs"),
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<(&str, &str)> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["stream"].as_str().unwrap(), l["line"].as_str().unwrap()))
        .collect();
    assert!(lines.contains(&("stdout", "hello world")), "{lines:?}");
    assert!(lines.contains(&("stderr", "to stderr")), "{lines:?}");
    let (status, _) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}/tasks/nope/logs"),
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Changes: viewers may not; admins may, with clear errors for bad bodies.
    let trigger = "/api/v1/dags/greet/runs";
    let (status, body) = api.call("POST", trigger, viewer, Some("{}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error(&body).contains("admin token"));
    let (status, body) = api
        .call("POST", trigger, admin, Some(r#"{"params":{"whom":"x"}}"#))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error(&body).contains("unknown param `whom`"), "{body}");
    let (status, body) = api.call("POST", trigger, admin, Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).contains("JSON"), "{body}");
    let (status, body) = api
        .call("POST", trigger, admin, Some(r#"{"param":{}}"#))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api
        .send(
            "POST",
            trigger,
            admin,
            Some("full_refresh=true"),
            &[("Content-Type", "text/plain")],
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    // `null` is no body (the document allows it); serde would read a struct from an array; the document says an object, and so does the server.
    let (status, body) = api.call("POST", trigger, admin, Some("[{}]")).await;
    assert_eq!(
        (status, error(&body)),
        (
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object, found an array"
        )
    );
    let (status, body) = api
        .call("POST", "/api/v1/dags/nope/runs", admin, Some("{}"))
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::NOT_FOUND, "no DAG `nope`")
    );
    let (status, _) = api
        .call("POST", "/api/v1/dags/No%20Such/runs", admin, Some("{}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A cross-site request is refused even with a token.
    let (status, body) = api
        .send(
            "POST",
            trigger,
            admin,
            Some("{}"),
            &[
                ("Origin", "https://evil.example"),
                ("Host", "127.0.0.1:8080"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, made) = api
        .call("POST", trigger, admin, Some(r#"{"params":{"who":"api"}}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let new_run = made["run_id"].as_i64().unwrap();
    let (_, detail) = api
        .call("GET", &format!("/api/v1/runs/{new_run}"), viewer, None)
        .await;
    // Started at once: its first tasks are queued for workers, with no scheduler's pass.
    assert_eq!(detail["run"]["state"], "running", "{detail}");
    assert_eq!(detail["run"]["params"]["who"], "api");

    // The grid, a page at a time: runs newest first × the DAG's tasks.
    let (status, grid) = api
        .call("GET", "/api/v1/dags/greet/grid?limit=1", viewer, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{grid}");
    assert_eq!(grid["tasks"], json!(["hello", "after"]));
    assert_eq!(grid["runs"][0]["run_id"], new_run);
    assert_eq!(grid["runs"][0]["cells"][0]["state"], "queued");
    assert_eq!(grid["next_before"], new_run);
    assert_eq!(grid["task_count"], 2);
    assert_eq!(grid["next_tasks_from"], Value::Null);
    // Columns a page at a time too.
    let (status, left) = api
        .call(
            "GET",
            "/api/v1/dags/greet/grid?limit=2&tasks_limit=1",
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{left}");
    assert_eq!(left["tasks"], json!(["hello"]));
    assert_eq!(left["next_tasks_from"], 1);
    assert_eq!(
        left["runs"][0]["cells"],
        json!([{"state": "queued", "device": null}])
    );
    assert_eq!(left["runs"][1]["cells"][0]["device"], "cpu");
    let (_, right) = api
        .call(
            "GET",
            "/api/v1/dags/greet/grid?limit=2&tasks_from=1&tasks_limit=1",
            viewer,
            None,
        )
        .await;
    assert_eq!(right["tasks"], json!(["after"]));
    assert_eq!(right["runs"][0]["cells"][0]["state"], "scheduled");
    assert_eq!(right["runs"][1]["cells"][0]["state"], "success");
    assert_eq!(right["next_tasks_from"], Value::Null);
    let (_, older) = api
        .call(
            "GET",
            &format!("/api/v1/dags/greet/grid?limit=1&before={new_run}"),
            viewer,
            None,
        )
        .await;
    assert_eq!(older["runs"][0]["run_id"], run_id);
    assert_eq!(
        older["runs"][0]["cells"][1],
        json!({"state": "success", "device": "cpu"})
    );
    assert_eq!(older["next_before"], Value::Null);
    let (_, page) = api
        .call(
            "GET",
            &format!("/api/v1/runs?before={new_run}"),
            viewer,
            None,
        )
        .await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["run_id"], run_id);
    for bad in [
        "/api/v1/dags/greet/grid?limit=0",
        "/api/v1/dags/greet/grid?before=x",
        "/api/v1/dags/greet/grid?x=1",
        "/api/v1/dags/greet/grid?tasks_limit=0",
        "/api/v1/dags/greet/grid?tasks_from=-3",
    ] {
        let (status, body) = api.call("GET", bad, viewer, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    // The last position there is pages past the end, not an overflow.
    let (status, page) = api
        .call(
            "GET",
            "/api/v1/dags/greet/grid?tasks_from=9223372036854775806",
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["next_tasks_from"], Value::Null);
    let (status, page) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}?tasks_from=9223372036854775807"),
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (&page["tasks"], &page["next_tasks_from"]),
        (&json!([]), &Value::Null)
    );
    let (status, _) = api
        .call("GET", "/api/v1/dags/nope/grid", viewer, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Cancel the queued run; pause and unpause.
    let cancel = format!("/api/v1/runs/{new_run}/cancel");
    let (status, _) = api.call("POST", &cancel, viewer, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api.call("POST", &cancel, admin, None).await;
    assert_eq!(
        (status, &body["cancel_requested"]),
        (StatusCode::OK, &json!(true))
    );
    let (status, _) = api
        .call("POST", "/api/v1/runs/424242/cancel", admin, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api
        .call("POST", "/api/v1/dags/greet/pause", admin, None)
        .await;
    assert_eq!((status, &body["paused"]), (StatusCode::OK, &json!(true)));
    let (_, dags) = api.call("GET", "/api/v1/dags", viewer, None).await;
    assert_eq!(dags[0]["paused"], true);
    let (status, body) = api
        .call("POST", "/api/v1/dags/greet/unpause", admin, None)
        .await;
    assert_eq!((status, &body["paused"]), (StatusCode::OK, &json!(false)));
    let (status, _) = api
        .call("POST", "/api/v1/dags/nope/pause", admin, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Clearing a task of the finished run: it and what needs it run again.
    let clear = format!("/api/v1/runs/{run_id}/tasks/hello/clear");
    let (status, _) = api.call("POST", &clear, viewer, Some("{}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/v1/runs/{run_id}/tasks/nope/clear"),
            admin,
            Some("{}"),
        )
        .await;
    assert_eq!(
        (status, error(&body)),
        (
            StatusCode::NOT_FOUND,
            format!("run {run_id} has no task `nope`").as_str()
        )
    );
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/v1/runs/{new_run}/tasks/hello/clear"),
            admin,
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api
        .call("POST", &clear, admin, Some(r#"{"downstream": "yes"}"#))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // No body reads as `{}`: downstream tasks are cleared too.
    let (status, body) = api.call("POST", &clear, admin, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cleared"], json!(["hello", "after"]));
    let (_, detail) = api
        .call("GET", &format!("/api/v1/runs/{run_id}"), viewer, None)
        .await;
    assert_eq!(detail["run"]["state"], "queued");
    assert_eq!(detail["tasks"][0]["state"], "scheduled");

    // Unknown endpoints and methods.
    let (status, body) = api.call("GET", "/api/v1/nothing", viewer, None).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::NOT_FOUND, "no such endpoint: /api/v1/nothing")
    );
    let (status, body) = api.call("DELETE", "/api/v1/dags", admin, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");

    // A revoked token is refused from then on.
    let tokens = api.state.store.tokens().await.unwrap();
    let viewer_id = tokens.iter().find(|t| t.role == "viewer").unwrap().id;
    assert!(
        api.state
            .store
            .revoke_token(viewer_id, SystemClock.now_ms())
            .await
            .unwrap()
    );
    let (status, _) = api.call("GET", "/api/v1/me", viewer, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Without a token: health, metrics, the OpenAPI document and the UI.
    let (status, body) = api.call("GET", "/healthz", None, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Value::String("ok\n".into()))
    );
    let (status, metrics) = api.call("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap().to_string();
    for line in [
        // Cancelling is asked for (the scheduler service ends the run); the cleared run waits;
        // the run triggered through the API started at once, its first task queued.
        "amdahl_runs{state=\"queued\"} 1",
        "amdahl_runs{state=\"running\"} 1",
        "amdahl_tasks{state=\"scheduled\"} 3",
        "amdahl_tasks{state=\"queued\"} 1",
        "amdahl_queue_depth 1",
        "amdahl_attempts_total{device=\"cpu\"} 2",
    ] {
        assert!(metrics.contains(line), "`{line}` in\n{metrics}");
    }
    let (status, doc) = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/dags",
        "/api/v1/dags/{dag_id}",
        "/api/v1/dags/{dag_id}/runs",
        "/api/v1/dags/{dag_id}/grid",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/cancel",
        "/api/v1/runs/{run_id}/tasks/{task_id}",
        "/api/v1/runs/{run_id}/tasks/{task_id}/logs",
        "/api/v1/runs/{run_id}/tasks/{task_id}/preview",
        "/api/v1/dags/{dag_id}/versions",
        "/api/v1/dags/{dag_id}/versions/{version_id}",
        "/api/v1/dags/{dag_id}/diff",
        "/api/v1/runs/{run_id}/tasks/{task_id}/clear",
        "/api/v1/assets",
        "/api/v1/assets/{name}",
        "/api/v1/assets/{name}/events",
    ] {
        assert!(paths.contains_key(path), "{path} in the OpenAPI document");
    }
    // The document states what the server refuses: every operation but the document itself
    // needs a token, and the bounds of pages.
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            if path != "/api/v1/openapi.json" {
                assert!(responses.contains_key("401"), "{method} {path}: 401");
            }
        }
    }
    let grid = &paths["/api/v1/dags/{dag_id}/grid"]["get"]["parameters"];
    let limit = grid
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000))
    );
    let (status, page) = api.call("GET", "/", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("<script src=\"/app.js\""));
}

/// The first rows of a task's output: columns with their types, cells as text, the whole
/// row count and size; bounded `limit`; no output or no task is a 404; with `--no-preview`
/// only admins see rows.
async fn previews_show_an_outputs_first_rows(store: Store) {
    let mut api = Api::new(store).await;
    std::fs::write(
        api.state.dags_folder.join("rows.yaml"),
        "dag: rows\ntasks:\n  numbers:\n    sql: \"SELECT id, id * 10 AS tens, CASE WHEN id = 2 \
         THEN NULL ELSE 'n' || CAST(id AS VARCHAR) END AS label FROM (VALUES (1), (2), (3)) AS \
         t(id) ORDER BY id\"\n  told:\n    shell: \"true\"\n",
    )
    .unwrap();
    let run_id = api.finished_run_of("rows.yaml").await;
    let (admin, viewer) = (Some(api.admin.clone()), Some(api.viewer.clone()));
    let path =
        |task: &str, query: &str| format!("/api/v1/runs/{run_id}/tasks/{task}/preview{query}");
    let (status, shown) = api
        .call("GET", &path("numbers", "?limit=2"), viewer.as_deref(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(
        shown["columns"],
        json!([
            {"name": "id", "type": "Int64"},
            {"name": "tens", "type": "Int64"},
            {"name": "label", "type": "Utf8View"}
        ])
    );
    assert_eq!(
        shown["rows"],
        json!([["1", "10", "n1"], ["2", "20", "NULL"]])
    );
    assert_eq!(shown["total_rows"], json!(3));
    assert!(shown["bytes"].as_i64().is_some_and(|b| b > 0), "{shown}");
    let (status, all) = api
        .call("GET", &path("numbers", ""), viewer.as_deref(), None)
        .await;
    assert_eq!(
        (status, all["rows"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(3))
    );
    for bad in ["?limit=0", "?limit=1001", "?limit=ten"] {
        let (status, body) = api
            .call("GET", &path("numbers", bad), viewer.as_deref(), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(error(&body).contains("limit"), "{bad}: {body}");
    }
    let (status, body) = api
        .call("GET", &path("told", ""), viewer.as_deref(), None)
        .await;
    assert_eq!(
        (status, error(&body)),
        (
            StatusCode::NOT_FOUND,
            format!("task `told` of run {run_id} has published no output").as_str()
        )
    );
    let (status, _) = api
        .call("GET", &path("nope", ""), viewer.as_deref(), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // `--no-preview`: viewers are refused, admins still see the rows.
    api.state.viewer_previews = false;
    let (status, body) = api
        .call("GET", &path("numbers", ""), viewer.as_deref(), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).contains("--no-preview"), "{body}");
    let (status, _) = api
        .call("GET", &path("numbers", ""), admin.as_deref(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// A DAG's versions: each run pins one; the list counts the runs of each, newest first; a
/// version's file reads back as recorded; two versions compare as a unified diff; versions
/// of another DAG, unknown ones and bad bounds are refused.
async fn versions_list_show_and_compare(store: Store) {
    let api = Api::new(store).await;
    let first_run = api.finished_run().await;
    std::fs::write(
        api.state.dags_folder.join("greet.yaml"),
        DAG.replace("echo done", "echo done again"),
    )
    .unwrap();
    let second_run = api.finished_run().await;
    let third_run = api.finished_run().await;
    let viewer = Some(api.viewer.as_str());
    let (status, runs) = api
        .call("GET", &format!("/api/v1/runs/{first_run}"), viewer, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let first_version = runs["run"]["dag_version_id"].as_i64().unwrap();
    let (status, list) = api
        .call("GET", "/api/v1/dags/greet/versions", viewer, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let second_version = list[0]["version_id"].as_i64().unwrap();
    assert_eq!(list[1]["version_id"], json!(first_version));
    assert_eq!(
        (list[0]["runs"].clone(), list[0]["last_run_id"].clone()),
        (json!(2), json!(third_run))
    );
    assert_eq!(
        (list[1]["runs"].clone(), list[1]["last_run_id"].clone()),
        (json!(1), json!(first_run))
    );
    assert!(second_run < third_run);
    let (status, limited) = api
        .call("GET", "/api/v1/dags/greet/versions?limit=1", viewer, None)
        .await;
    assert_eq!(
        (status, limited.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    let (status, source) = api
        .call(
            "GET",
            &format!("/api/v1/dags/greet/versions/{first_version}"),
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(source["yaml"], json!(DAG));
    let (status, diff) = api
        .call(
            "GET",
            &format!("/api/v1/dags/greet/diff?from={first_version}&to={second_version}"),
            viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let diff = diff["diff"].as_str().unwrap();
    assert!(
        diff.contains("\n-    shell: \"echo done\"\n+    shell: \"echo done again\"\n"),
        "{diff}"
    );
    let (status, same) = api
        .call(
            "GET",
            &format!("/api/v1/dags/greet/diff?from={first_version}&to={first_version}"),
            viewer,
            None,
        )
        .await;
    assert_eq!((status, same["diff"].as_str()), (StatusCode::OK, Some("")));
    for (path, want) in [
        (
            "/api/v1/dags/nope/versions".to_string(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/dags/greet/versions?limit=0".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/dags/greet/versions/999999".to_string(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/v1/dags/other/versions/{first_version}"),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/dags/greet/versions/abc".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/dags/greet/diff?from={first_version}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/dags/greet/diff?from={first_version}&to=999999"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, body) = api.call("GET", &path, viewer, None).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(!error(&body).is_empty());
    }
}

/// Assets: a posted event (admin only) starts the run of the DAG scheduled on it, which
/// names the event as its cause; the list and the asset's page show producers, consumers,
/// events and the runs they started; bad names, bodies and bounds are refused clearly.
async fn assets_are_posted_listed_and_start_runs(store: Store) {
    let api = Api::new(store).await;
    let folder = api.state.dags_folder.clone();
    std::fs::write(
        folder.join("ingest.yaml"),
        "dag: ingest\ntasks:\n  orders: { empty: {}, produces: lake.orders }\n",
    )
    .unwrap();
    std::fs::write(
        folder.join("report.yaml"),
        "dag: report\nschedule: { assets: [lake.orders] }\ntasks:\n  build: { empty: {} }\n",
    )
    .unwrap();
    let scheduler = amdahl_scheduler::service::SchedulerService::new(
        api.state.store.clone(),
        Arc::new(SystemClock),
        std::time::Duration::from_millis(50),
        Some(folder),
    );
    scheduler.tick().await.unwrap();
    let (admin, viewer) = (Some(api.admin.as_str()), Some(api.viewer.as_str()));

    let (status, body) = api
        .call(
            "POST",
            "/api/v1/assets/lake.orders/events",
            viewer,
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, event) = api
        .call(
            "POST",
            "/api/v1/assets/lake.orders/events",
            admin,
            Some(r#"{"extra": {"rows": 1200}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    assert_eq!(
        (&event["asset"], &event["source"], &event["extra"]),
        (&json!("lake.orders"), &json!("api"), &json!({"rows": 1200}))
    );
    // No body is an event without `extra`.
    let (status, bare) = api
        .call("POST", "/api/v1/assets/lake.orders/events", admin, None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bare}");
    scheduler.tick().await.unwrap();
    let runs = api
        .state
        .store
        .runs_before(Some("report"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "both events start one run");
    let (status, run) = api
        .call("GET", &format!("/api/v1/runs/{}", runs[0].id), viewer, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let causes: Vec<&Value> = run["caused_by"].as_array().unwrap().iter().collect();
    assert_eq!(
        causes.iter().map(|e| &e["id"]).collect::<Vec<_>>(),
        vec![&event["id"], &bare["id"]]
    );

    let (status, list) = api.call("GET", "/api/v1/assets", viewer, None).await;
    assert_eq!(status, StatusCode::OK);
    let orders = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "lake.orders")
        .unwrap_or_else(|| panic!("lake.orders in {list}"));
    assert_eq!(
        (
            &orders["events"],
            &orders["producers"],
            &orders["consumers"]
        ),
        (&json!(2), &json!(["ingest.orders"]), &json!(["report"]))
    );
    assert_eq!(orders["last_event"]["id"], bare["id"]);
    let (status, detail) = api
        .call("GET", "/api/v1/assets/lake.orders?limit=1", viewer, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let recent = detail["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(
        (&recent[0]["id"], &recent[0]["runs"]),
        (&bare["id"], &json!([runs[0].id]))
    );

    let big = format!(r#"{{"extra": {{"x": "{}"}}}}"#, "x".repeat(17_000));
    for (method, path, body, content_type, want) in [
        (
            "GET",
            "/api/v1/assets/no.such",
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/v1/assets/bad%20name",
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v1/assets?limit=0",
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v1/assets/lake.orders?before=0",
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/assets/bad%20name/events",
            Some("{}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/assets/dag:report/events",
            Some("{}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/assets/lake.orders/events",
            Some(r#"{"extar": 1}"#),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/assets/lake.orders/events",
            Some("{"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/assets/lake.orders/events",
            Some(r#"{"extra": [1]}"#),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/assets/lake.orders/events",
            Some("{}"),
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "POST",
            "/api/v1/assets/lake.orders/events",
            Some(big.as_str()),
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("Content-Type", c))
            .into_iter()
            .collect();
        let (status, body) = api.send(method, path, admin, body, &headers).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(!error(&body).is_empty());
    }
    // Refused posts recorded nothing.
    let (_, detail) = api
        .call("GET", "/api/v1/assets/lake.orders", viewer, None)
        .await;
    assert_eq!(detail["events"], json!(2));
}

/// A DAG's typed params: the DAG page lists what each declares, and a trigger with a value
/// out of bounds, of the wrong type or not among the choices is refused naming the param
/// (422); a valid one makes a run.
async fn typed_params_are_checked_on_trigger(store: Store) {
    let api = Api::new(store).await;
    std::fs::write(
        api.state.dags_folder.join("typed.yaml"),
        "dag: typed\nparams:\n  sf: { default: 0.1, type: number, minimum: 0.01, description: \
         scale }\n  region: { default: EU, enum: [EU, US] }\ntasks:\n  t:\n    shell: \"true\"\n",
    )
    .unwrap();
    api.finished_run_of("typed.yaml").await;
    let admin = Some(api.admin.as_str());
    let (status, detail) = api.call("GET", "/api/v1/dags/typed", admin, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        detail["param_specs"]["sf"],
        json!({"type": "number", "description": "scale", "enum": [], "minimum": 0.01, "maximum": null})
    );
    assert_eq!(detail["param_specs"]["region"]["enum"], json!(["EU", "US"]));
    for (body, message) in [
        (
            r#"{"params": {"sf": 0}}"#,
            "param `sf` must be at least 0.01, found 0",
        ),
        (
            r#"{"params": {"sf": "lots"}}"#,
            "param `sf` must be a number, found \"lots\"",
        ),
        (
            r#"{"params": {"region": "APAC"}}"#,
            "param `region` must be one of \"EU\", \"US\", found \"APAC\"",
        ),
    ] {
        let (status, refused) = api
            .call("POST", "/api/v1/dags/typed/runs", admin, Some(body))
            .await;
        assert_eq!(
            (status, error(&refused)),
            (StatusCode::UNPROCESSABLE_ENTITY, message)
        );
    }
    let (status, made) = api
        .call(
            "POST",
            "/api/v1/dags/typed/runs",
            admin,
            Some(r#"{"params": {"sf": "2", "region": "US"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let run_id = made["run_id"].as_i64().unwrap();
    let (_, run) = api
        .call("GET", &format!("/api/v1/runs/{run_id}"), admin, None)
        .await;
    assert_eq!(run["run"]["params"], json!({"sf": 2.0, "region": "US"}));
}

/// The event stream sends the run as it is at once.
async fn the_event_stream_starts_with_the_run(store: Store) {
    let api = Api::new(store).await;
    let run_id = api.finished_run().await;
    let request = Request::builder()
        .uri(format!("/api/v1/events?run={run_id}"))
        .header("Authorization", format!("Bearer {}", api.admin))
        .body(Body::empty())
        .unwrap();
    let response = router(api.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: run\ndata: {"), "{text}");
    assert!(text.contains("\"state\":\"success\""), "{text}");
    let (status, _) = api
        .call("GET", "/api/v1/events?run=31337", Some(&api.admin), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// After the first event, the stream sends only the tasks that changed, and nothing while
/// nothing changes.
async fn the_event_stream_sends_what_changed(store: Store) {
    let api = Api::new(store).await;
    let run_id = api.finished_run().await;
    let request = Request::builder()
        .uri(format!("/api/v1/events?run={run_id}"))
        .header("Authorization", format!("Bearer {}", api.admin))
        .body(Body::empty())
        .unwrap();
    let response = router(api.state.clone()).oneshot(request).await.unwrap();
    let mut body = response.into_body();
    let mut next_event = async |within: u64| -> Option<Value> {
        let mut text = String::new();
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(within), body.frame())
                .await
                .ok()?
                .unwrap()
                .unwrap();
            text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
            if let Some(data) = text
                .strip_prefix("event: run\ndata: ")
                .and_then(|t| t.strip_suffix("\n\n"))
            {
                return Some(serde_json::from_str(data).unwrap());
            }
        }
    };
    let first = next_event(10).await.expect("the first event");
    assert_eq!(first["full"], true);
    assert_eq!(first["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(first["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(first["counts"], json!({"success": 2}));
    // Nothing changes: nothing is sent (the stream looks every second).
    assert!(next_event(3).await.is_none(), "an event without a change");
    // Clear one task: the next event has that task alone, and the run queued again.
    amdahl_scheduler::clear::clear(&api.state.store, run_id, &["after".to_string()], false)
        .await
        .unwrap();
    api.state
        .store
        .signal(amdahl_scheduler::Topic::Progress)
        .await;
    let change = next_event(10).await.expect("an event after the change");
    assert_eq!(change["full"], false);
    assert_eq!(change["run"]["state"], "queued");
    assert_eq!(change["counts"], json!({"scheduled": 1, "success": 1}));
    let tasks: Vec<&str> = change["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["after"]);
    assert_eq!(change["tasks"][0]["state"], "scheduled");
    // Its attempts come with it (clearing keeps the history).
    assert!(
        change["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["task_id"] == "after")
    );
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn assets_are_posted_listed_and_start_runs() {
        let db = TestDb::sqlite().await;
        super::assets_are_posted_listed_and_start_runs(db.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_endpoint_answers_and_refuses_clearly() {
        let db = TestDb::sqlite().await;
        super::every_endpoint_answers_and_refuses_clearly(db.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn typed_params_are_checked_on_trigger() {
        let db = TestDb::sqlite().await;
        super::typed_params_are_checked_on_trigger(db.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn versions_list_show_and_compare() {
        let db = TestDb::sqlite().await;
        super::versions_list_show_and_compare(db.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn previews_show_an_outputs_first_rows() {
        let db = TestDb::sqlite().await;
        super::previews_show_an_outputs_first_rows(db.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_event_stream_starts_with_the_run() {
        let db = TestDb::sqlite().await;
        super::the_event_stream_starts_with_the_run(db.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_event_stream_sends_what_changed() {
        let db = TestDb::sqlite().await;
        super::the_event_stream_sends_what_changed(db.store().await).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn assets_are_posted_listed_and_start_runs() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        super::assets_are_posted_listed_and_start_runs(db.store().await).await;
        db.drop_database().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_endpoint_answers_and_refuses_clearly() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        super::every_endpoint_answers_and_refuses_clearly(db.store().await).await;
        db.drop_database().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn typed_params_are_checked_on_trigger() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        super::typed_params_are_checked_on_trigger(db.store().await).await;
        db.drop_database().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn versions_list_show_and_compare() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        super::versions_list_show_and_compare(db.store().await).await;
        db.drop_database().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn previews_show_an_outputs_first_rows() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        super::previews_show_an_outputs_first_rows(db.store().await).await;
        db.drop_database().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_event_stream_starts_with_the_run() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        super::the_event_stream_starts_with_the_run(db.store().await).await;
        db.drop_database().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_event_stream_sends_what_changed() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        super::the_event_stream_sends_what_changed(db.store().await).await;
        db.drop_database().await;
    }
}
