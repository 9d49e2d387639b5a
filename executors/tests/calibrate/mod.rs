//! `amdahl calibrate`'s measurements on this machine.

use amdahl_executors::calibrate::{Effort, calibrate};
use amdahl_placement::{OpKind, Profile};

/// A quick calibration measures every CPU figure (finite, positive), says whether it found a
/// GPU exactly as the device probe does, and its profile survives a JSON round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_calibration_measures_every_figure() {
    let calibration = calibrate(Effort::Quick).await.unwrap();
    let profile = &calibration.profile;
    let positive = |x: f64| x.is_finite() && x > 0.0;
    assert!(positive(profile.cpu.memory_bandwidth));
    assert!(positive(profile.cpu.fixed_seconds));
    for kind in OpKind::ALL {
        let rate = profile.cpu.throughput.get(&kind).copied().unwrap_or(0.0);
        assert!(positive(rate), "CPU {}: {rate}", kind.name());
    }
    // A scan is cheaper per row than a sort of the same rows.
    assert!(profile.cpu.throughput[&OpKind::Scan] > profile.cpu.throughput[&OpKind::Sort]);
    let report = amdahl_executors::gpu::devices();
    match &profile.gpu {
        Some(gpu) => {
            assert!(report.usable());
            assert!(positive(gpu.device.memory_bandwidth) && positive(gpu.host_to_device));
            assert!(positive(gpu.device_to_host) && gpu.free_bytes > 0);
            for kind in [OpKind::Scan, OpKind::Aggregate, OpKind::Gemm] {
                assert!(
                    positive(gpu.device.throughput[&kind]),
                    "GPU {}",
                    kind.name()
                );
            }
        }
        None => {
            assert!(!report.usable() || calibration.gpu_problem.is_some());
            let problem = calibration.gpu_problem.as_deref().unwrap_or_default();
            assert!(!problem.is_empty());
            assert!(
                calibration
                    .figures
                    .iter()
                    .any(|(what, value)| what == "GPU" && value.contains(problem)),
                "{:?}",
                calibration.figures
            );
        }
    }
    assert!(
        profile
            .source
            .as_deref()
            .unwrap()
            .contains("calibrate (quick)")
    );
    let json = serde_json::to_string(profile).unwrap();
    let back: Profile = serde_json::from_str(&json).unwrap();
    // (serde_json may parse a float one unit in the last place off; what it writes back
    // must be what was stored.)
    assert_eq!(back.gpu.is_some(), profile.gpu.is_some());
    assert_eq!(back.cpu.throughput.len(), profile.cpu.throughput.len());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(close(
        back.cpu.memory_bandwidth,
        profile.cpu.memory_bandwidth
    ));
    for (kind, rate) in &profile.cpu.throughput {
        assert!(close(back.cpu.throughput[kind], *rate), "{}", kind.name());
    }
}
