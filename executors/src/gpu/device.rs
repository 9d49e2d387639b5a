//! Which CUDA devices this process can use, found without ever panicking.
//!
//! cudarc loads the CUDA libraries when first called and panics if they are missing, so the
//! probe checks that each library can be loaded before making any CUDA call. Every way of
//! not having a usable GPU (no driver library, no NVRTC, the driver not starting, no device,
//! `AMDAHL_GPU=off`) ends as a [`DeviceReport`] whose `problem` says which, in words a user
//! can act on.

use std::sync::OnceLock;

use cudarc::driver::CudaContext;

/// Set to `off` to make this process ignore its GPUs (stages then run on the CPU and say
/// why): for machines whose GPU is shared or broken, and for testing the CPU fallback on a
/// machine that has one.
pub const GPU_SWITCH_ENV: &str = "AMDAHL_GPU";

/// One CUDA device as the driver describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// (major, minor), e.g. (9, 0) for an H100.
    pub compute_capability: (i32, i32),
    pub multiprocessors: i32,
}

impl DeviceInfo {
    /// The NVRTC architecture flag for this device, e.g. `sm_90`.
    pub fn arch(&self) -> String {
        format!(
            "sm_{}{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }
}

/// What the probe found: the devices, and why none can be used if so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    pub devices: Vec<DeviceInfo>,
    /// Why stages cannot run on a GPU here; `None` when they can.
    pub problem: Option<String>,
}

impl DeviceReport {
    pub fn usable(&self) -> bool {
        self.problem.is_none() && !self.devices.is_empty()
    }

    fn unusable(problem: impl Into<String>) -> Self {
        DeviceReport {
            devices: Vec::new(),
            problem: Some(problem.into()),
        }
    }
}

/// The devices of this machine, probed once per process (the driver's answer does not change
/// while a process lives, and starting it costs tens of milliseconds).
pub fn devices() -> &'static DeviceReport {
    static REPORT: OnceLock<DeviceReport> = OnceLock::new();
    REPORT.get_or_init(|| probe(std::env::var(GPU_SWITCH_ENV).ok().as_deref()))
}

/// Probes now; `switch` is the value of [`GPU_SWITCH_ENV`].
pub fn probe(switch: Option<&str>) -> DeviceReport {
    if switch.is_some_and(|s| s.eq_ignore_ascii_case("off")) {
        return DeviceReport::unusable(format!("GPUs are switched off ({GPU_SWITCH_ENV}=off)"));
    }
    // SAFETY: these only try to dlopen the libraries by their usual names; nothing is called.
    let (driver, nvrtc) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    if !driver {
        return DeviceReport::unusable(
            "no CUDA driver on this machine (libcuda.so could not be loaded)",
        );
    }
    let count = match CudaContext::device_count() {
        Ok(count) => count.max(0) as usize,
        Err(e) => return DeviceReport::unusable(format!("the CUDA driver did not start: {e}")),
    };
    if count == 0 {
        return DeviceReport::unusable("the CUDA driver found no device");
    }
    let mut devices = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for ordinal in 0..count {
        match describe(ordinal) {
            Ok(info) => devices.push(info),
            Err(e) => failures.push(format!("device {ordinal}: {e}")),
        }
    }
    let problem = if !nvrtc {
        Some(
            "the CUDA runtime compiler is missing (libnvrtc.so could not be loaded), so no \
             kernel can be built; install the CUDA toolkit's NVRTC"
                .to_string(),
        )
    } else if devices.is_empty() {
        Some(format!(
            "no device could be opened: {}",
            failures.join("; ")
        ))
    } else {
        None
    };
    DeviceReport { devices, problem }
}

fn describe(ordinal: usize) -> Result<DeviceInfo, cudarc::driver::DriverError> {
    use cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
    let context = CudaContext::new(ordinal)?;
    let (free, total) = context.mem_get_info()?;
    Ok(DeviceInfo {
        ordinal,
        name: context.name()?,
        total_bytes: total as u64,
        free_bytes: free as u64,
        compute_capability: context.compute_capability()?,
        multiprocessors: context.attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switched_off_is_unusable_and_says_why() {
        let report = probe(Some("off"));
        assert!(!report.usable());
        assert!(report.problem.unwrap().contains("AMDAHL_GPU=off"));
    }

    /// On any machine: the probe answers (it never panics), and an unusable report says why.
    #[test]
    fn the_probe_never_panics_and_explains_itself() {
        let report = probe(None);
        if report.usable() {
            assert!(report.devices.iter().all(|d| d.total_bytes > 0));
        } else {
            assert!(!report.problem.unwrap_or_default().is_empty());
        }
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_gpu_machine_has_a_usable_device() {
        let report = probe(None);
        assert!(report.usable(), "{:?}", report.problem);
        for device in &report.devices {
            assert!(device.total_bytes > 0 && device.free_bytes <= device.total_bytes);
            assert!(device.compute_capability.0 >= 5, "{device:?}");
            assert!(device.multiprocessors > 0, "{device:?}");
        }
    }

    #[test]
    fn arch_names_the_nvrtc_target() {
        let info = DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            total_bytes: 80 << 30,
            free_bytes: 79 << 30,
            compute_capability: (9, 0),
            multiprocessors: 132,
        };
        assert_eq!(info.arch(), "sm_90");
    }
}
