//! Any bytes as a DAG file: loading and validating them ends in a `Dag` or in diagnostics that
//! render, never a panic, a hang or an allocation beyond the limits.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match amdahl_dags::load::load_bytes("fuzz.yaml", Path::new("/nonexistent-fuzz-dir"), data) {
        Ok(dag) => {
            // A valid DAG's params resolve with no overrides, and the schema of the model
            // serializes.
            let _ = amdahl_dags::params::resolve(&dag, &[]);
        }
        Err(error) => {
            let rendered = error.render();
            assert!(!rendered.is_empty(), "an error with nothing to say");
        }
    }
});
