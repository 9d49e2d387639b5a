//! `amdahl devices`: the GPUs this machine can run stages on, or why there are none.

use std::process::ExitCode;

use amdahl_executors::gpu::{DeviceReport, devices};

use crate::output;

pub fn devices_list(json: bool) -> anyhow::Result<ExitCode> {
    let report = devices();
    if json {
        println!("{}", to_json(report));
    } else {
        print!("{}", render(report));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(report: &DeviceReport) -> String {
    let mut out = String::new();
    if !report.devices.is_empty() {
        let rows: Vec<Vec<String>> = report
            .devices
            .iter()
            .map(|d| {
                vec![
                    d.ordinal.to_string(),
                    d.name.clone(),
                    format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
                    d.multiprocessors.to_string(),
                    output::bytes(Some(d.total_bytes as i64)),
                    output::bytes(Some(d.free_bytes as i64)),
                ]
            })
            .collect();
        out.push_str(&output::table(
            &["GPU", "NAME", "COMPUTE", "SMS", "MEMORY", "FREE"],
            &rows,
        ));
    }
    match &report.problem {
        None => {}
        Some(problem) => {
            out.push_str(&format!(
                "No usable GPU: {problem}.\nStages run on the CPU; a task with `device: gpu` \
                 falls back to the CPU and its attempt log says why.\n"
            ));
        }
    }
    out
}

fn to_json(report: &DeviceReport) -> serde_json::Value {
    serde_json::json!({
        "usable": report.usable(),
        "problem": report.problem,
        "devices": report.devices.iter().map(|d| serde_json::json!({
            "ordinal": d.ordinal,
            "name": d.name,
            "compute_capability": format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
            "multiprocessors": d.multiprocessors,
            "total_bytes": d.total_bytes,
            "free_bytes": d.free_bytes,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amdahl_executors::gpu::DeviceInfo;

    #[test]
    fn a_machine_without_a_gpu_is_told_why_and_what_happens() {
        let text = render(&DeviceReport {
            devices: Vec::new(),
            problem: Some("no CUDA driver on this machine".into()),
        });
        assert!(text.starts_with("No usable GPU: no CUDA driver on this machine.\n"));
        assert!(text.contains("falls back to the CPU"));
    }

    #[test]
    fn devices_are_listed_with_their_memory() {
        let report = DeviceReport {
            devices: vec![DeviceInfo {
                ordinal: 0,
                name: "NVIDIA H100 80GB HBM3".into(),
                total_bytes: 80 << 30,
                free_bytes: 79 << 30,
                compute_capability: (9, 0),
                multiprocessors: 132,
            }],
            problem: None,
        };
        let text = render(&report);
        assert!(
            text.contains("NVIDIA H100 80GB HBM3  9.0      132  80.0 GiB  79.0 GiB"),
            "{text}"
        );
        assert_eq!(to_json(&report)["usable"], true);
    }
}
