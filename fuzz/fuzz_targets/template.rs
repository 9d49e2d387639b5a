//! Any text as a task template, rendered for a run with a few params: a string or a located
//! error, never a panic or an endless render (templates run on fuel).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

use amdahl_dags::template::{RunContext, render_text};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let context = RunContext {
        dag_id: "fuzz".into(),
        run_id: 7,
        logical_date: "2026-01-01T00:00:00Z".into(),
        params: BTreeMap::from([
            ("n".to_string(), serde_json::json!(3)),
            ("s".to_string(), serde_json::json!("text")),
            ("list".to_string(), serde_json::json!([1, 2, 3])),
            (
                "nested".to_string(),
                serde_json::json!({"a": {"b": [true, null]}}),
            ),
        ]),
        ds: "2026-01-01".into(),
        data_interval_end: "2026-01-02T00:00:00Z".into(),
        item: None,
    };
    if let Err(error) = render_text(text, &context) {
        assert!(error.line >= 1 && error.column >= 1, "{error:?}");
    }
});
