//! Where one attempt of a stage runs: decided once, as one typed [`Routed`] value, before the
//! stage is handed to the executors, which carry it out and never decide again.
//!
//! The decision reads what the task asked for (`device:`, `engine:`, `shards:`), what
//! placement decided for a `device: auto` stage (see [`crate::place`]), whether this process
//! has a usable GPU, and, only when nothing else decides, the size of the stage's local inputs
//! against [`AUTO_GPU_BYTES`]. It is pure: the caller says whether the GPU is usable.

use amdahl_dags::{DevicePreference, Engine};
use amdahl_placement::{Lane, Place, Placement};

/// Inputs at least this large go to a usable GPU when a task says `device: auto` and no
/// placement was decided for it (the worker has no profile, or estimating failed).
pub const AUTO_GPU_BYTES: u64 = 64 << 20;

/// Where a stage runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// On the CPU. `note`: the place the task asked for and cannot have, said in its attempt
    /// (a `device: gpu` shell task, say).
    Cpu { note: Option<String> },
    /// On the GPU when the executor can get there; `asked` begins the attempt's note when it
    /// cannot (a plan node the kernels do not cover, no usable GPU, a failed GPU run) and the
    /// stage falls back to the CPU.
    Gpu { asked: String },
    /// The query goes to a Ballista cluster (`engine: ballista`, or placed there). `note` is
    /// logged: the place asked for that the cluster overrides.
    Cluster { note: Option<String> },
    /// A `shards: N` query in `parts` parts shared by `lanes` (none: every part on the CPU);
    /// `note` says why the GPU takes no part when it could have.
    Split {
        parts: u32,
        lanes: Vec<Lane>,
        note: Option<String>,
    },
}

impl Route {
    /// The route in a few words, as the store records it with the attempt (`cpu`, `gpu`,
    /// `cluster`, `split into 4 parts over the CPU and the GPU`): where the attempt was sent,
    /// beside where it ran (a GPU route that fell back ran on the CPU).
    pub fn label(&self) -> String {
        match self {
            Route::Cpu { .. } => "cpu".to_string(),
            Route::Gpu { .. } => "gpu".to_string(),
            Route::Cluster { .. } => "cluster".to_string(),
            Route::Split { parts, lanes, .. } => format!(
                "split into {parts} parts over {}",
                if lanes.iter().any(|l| l.place == Place::Gpu) {
                    "the CPU and the GPU"
                } else {
                    "the CPU"
                }
            ),
        }
    }
}

/// A stage's route with the placement it came from (its reason and predictions), when
/// placement decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Routed {
    pub route: Route,
    pub placement: Option<Placement>,
    /// Why the route is what it is, in one line, whatever it is (pinned by the DAG, a kind
    /// with no GPU path, no usable GPU here and why, placement's reason, the input size rule):
    /// an attempt always says why it ran where it did.
    pub why: String,
}

impl Routed {
    /// The note that begins a GPU attempt's fallback note, for executors that try the GPU.
    pub fn gpu_asked(&self) -> Option<&str> {
        match &self.route {
            Route::Gpu { asked } => Some(asked),
            _ => None,
        }
    }

    /// Where the route sends the work first (a split stage starts on the CPU).
    pub fn place(&self) -> Place {
        match self.route {
            Route::Gpu { .. } => Place::Gpu,
            Route::Cluster { .. } => Place::Cluster,
            Route::Cpu { .. } | Route::Split { .. } => Place::Cpu,
        }
    }

    /// One line for the attempt's log: the route and why.
    pub fn describe(&self) -> String {
        let why = self.placement.as_ref().map(|p| p.reason.as_str());
        let place = self.route.label();
        match (why, &self.route) {
            (Some(why), _) => format!("route: {place} ({why})"),
            (None, Route::Gpu { asked }) => format!("route: {place} ({asked})"),
            (None, _) => format!("route: {place}"),
        }
    }
}

/// What the task asked for, as the route decision reads it.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The kind of work (`sql`, `shell`, `knn`, …), for notes.
    pub kind: &'static str,
    /// Whether this kind has a GPU path (`sql`, `knn`, `matmul`, `score`).
    pub gpu_path: bool,
    /// Whether it is a query (the cluster and splitting are for queries only).
    pub sql: bool,
    pub device: DevicePreference,
    pub engine: Engine,
    pub shards: u32,
    /// Placement's decision for a `device: auto` stage.
    pub placement: Option<&'a Placement>,
}

/// Whether placement has a choice to make for this stage: `device: auto`, not pinned to
/// Ballista, and somewhere to go besides the CPU (a usable GPU for a kind with a GPU path, or
/// a cluster in the profile for an unsplit query).
pub fn placeable(ask: &Ask<'_>, gpu_usable: bool, cluster: bool) -> bool {
    let gpu = ask.gpu_path && gpu_usable;
    let cluster = ask.sql && ask.shards <= 1 && cluster;
    ask.device == DevicePreference::Auto && ask.engine != Engine::Ballista && (gpu || cluster)
}

/// Decides the route. `gpu_problem` is why no GPU is usable in this process now (`None`: one
/// is; read only for kinds with a GPU path, so callers may pass `None` for the others);
/// `input_bytes` is asked for only when a `device: auto` stage with a usable GPU has no
/// placement to follow.
pub fn route(
    ask: &Ask<'_>,
    gpu_problem: Option<&str>,
    input_bytes: impl FnOnce() -> u64,
) -> Routed {
    let placement = ask.placement.cloned();
    let routed = |route, why: String| Routed {
        route,
        placement: placement.clone(),
        why,
    };
    if !ask.gpu_path {
        let note = (ask.device == DevicePreference::Gpu).then(|| {
            format!(
                "device: gpu was asked for, but {} stages run only on the CPU",
                ask.kind
            )
        });
        let why = note
            .clone()
            .unwrap_or_else(|| format!("{} stages run on the CPU", ask.kind));
        return routed(Route::Cpu { note }, why);
    }
    if ask.sql {
        let placed_on_cluster = ask.device == DevicePreference::Auto
            && ask.placement.is_some_and(|p| p.place == Place::Cluster);
        if ask.engine == Engine::Ballista || placed_on_cluster {
            let note = (ask.device == DevicePreference::Gpu)
                .then(|| "device: gpu was asked for, but the task runs on Ballista".to_string());
            let why = match (&note, ask.placement) {
                (Some(note), _) => note.clone(),
                (None, Some(p)) if placed_on_cluster => p.reason.clone(),
                _ => "engine: ballista".to_string(),
            };
            return routed(Route::Cluster { note }, why);
        }
        if ask.shards > 1 {
            let (lanes, note) = lanes(ask, gpu_problem);
            let why = note.clone().unwrap_or_else(|| {
                format!(
                    "shards: {} splits the query over {}",
                    ask.shards,
                    if lanes.iter().any(|l| l.place == Place::Gpu) {
                        "the CPU and the GPU"
                    } else {
                        "the CPU"
                    }
                )
            });
            return routed(
                Route::Split {
                    parts: ask.shards,
                    lanes,
                    note,
                },
                why,
            );
        }
    }
    let mut bytes = None;
    match gpu_choice(ask, gpu_problem, || *bytes.insert(input_bytes())) {
        Some(asked) => routed(
            Route::Gpu {
                asked: asked.clone(),
            },
            asked,
        ),
        None => {
            let why = match (ask.device, gpu_problem, ask.placement, bytes) {
                (DevicePreference::Cpu, _, _, _) => "device: cpu, pinned by the DAG".to_string(),
                (_, Some(problem), _, _) => format!("no usable GPU on this worker: {problem}"),
                (_, None, Some(p), _) => p.reason.clone(),
                (_, None, None, Some(bytes)) => format!(
                    "device: auto kept the CPU for {} MiB of input (the GPU from {} MiB)",
                    bytes >> 20,
                    AUTO_GPU_BYTES >> 20
                ),
                _ => "the CPU".to_string(),
            };
            routed(Route::Cpu { note: None }, why)
        }
    }
}

/// Why the stage should try the GPU (the start of its note if it does not get there), or
/// `None` for the CPU.
fn gpu_choice(
    ask: &Ask<'_>,
    gpu_problem: Option<&str>,
    input_bytes: impl FnOnce() -> u64,
) -> Option<String> {
    match ask.device {
        DevicePreference::Gpu => Some("device: gpu was asked for".into()),
        DevicePreference::Cpu => None,
        DevicePreference::Auto => {
            if gpu_problem.is_some() {
                return None;
            }
            if let Some(placement) = ask.placement {
                return (placement.place == Place::Gpu).then(|| placement.reason.clone());
            }
            auto_choice(input_bytes())
        }
    }
}

/// `device: auto` with a usable GPU and no placement: the GPU for inputs of at least
/// [`AUTO_GPU_BYTES`].
fn auto_choice(bytes: u64) -> Option<String> {
    (bytes >= AUTO_GPU_BYTES).then(|| {
        format!(
            "device: auto chose the GPU for {} MiB of input (at least {} MiB)",
            bytes >> 20,
            AUTO_GPU_BYTES >> 20
        )
    })
}

/// Which devices a split stage's parts may use: the CPU always; the GPU when it is usable and
/// asked for (`device: gpu`: every part) or placement priced it (`device: auto`).
fn lanes(ask: &Ask<'_>, gpu_problem: Option<&str>) -> (Vec<Lane>, Option<String>) {
    let gpu_only = vec![Lane {
        place: Place::Gpu,
        per_part_seconds: 0.0,
        whole_seconds: 1.0,
    }];
    match (ask.device, gpu_problem, ask.placement) {
        (DevicePreference::Cpu, _, _) => (Vec::new(), None),
        (_, Some(problem), _) => (
            Vec::new(),
            (ask.device == DevicePreference::Gpu).then(|| {
                format!("device: gpu was asked for, but no GPU is usable here ({problem})")
            }),
        ),
        (DevicePreference::Gpu, None, _) => (gpu_only, None),
        (DevicePreference::Auto, None, Some(placement)) => {
            (amdahl_placement::lanes(placement), None)
        }
        (DevicePreference::Auto, None, None) => (
            Vec::new(),
            Some("no calibrated profile to share the parts by; run `amdahl calibrate`".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(kind: &'static str, device: DevicePreference) -> Ask<'static> {
        Ask {
            kind,
            gpu_path: matches!(kind, "sql" | "knn" | "matmul" | "score"),
            sql: kind == "sql",
            device,
            engine: Engine::DataFusion,
            shards: 1,
            placement: None,
        }
    }

    fn placed(place: Place) -> Placement {
        Placement {
            place,
            cpu_seconds: 2.0,
            gpu_seconds: Some(1.0),
            cluster_seconds: None,
            reason: format!("placement chose the {}", place.name()),
            kind: None,
            cpu_factor: 1.0,
            gpu_factor: 1.0,
            cpu_fixed_seconds: 0.0,
            gpu_fixed_seconds: 0.0,
        }
    }

    const NO_GPU: Option<&str> = Some("no CUDA driver");
    fn never() -> u64 {
        panic!("input sizes are read only for auto stages without a placement")
    }

    /// Every route says why, whatever it is.
    #[test]
    fn every_route_says_why() {
        let why =
            |ask: &Ask<'_>, problem: Option<&str>, bytes: u64| route(ask, problem, || bytes).why;
        let cpu = DevicePreference::Cpu;
        let auto = DevicePreference::Auto;
        assert_eq!(
            why(&ask("shell", auto), None, 0),
            "shell stages run on the CPU"
        );
        assert_eq!(
            why(&ask("shell", DevicePreference::Gpu), None, 0),
            "device: gpu was asked for, but shell stages run only on the CPU"
        );
        assert_eq!(
            why(&ask("sql", cpu), None, 0),
            "device: cpu, pinned by the DAG"
        );
        assert_eq!(
            why(&ask("knn", auto), NO_GPU, 0),
            "no usable GPU on this worker: no CUDA driver"
        );
        assert_eq!(
            why(&ask("sql", auto), None, 1 << 20),
            "device: auto kept the CPU for 1 MiB of input (the GPU from 64 MiB)"
        );
        assert_eq!(
            why(&ask("sql", auto), None, AUTO_GPU_BYTES),
            "device: auto chose the GPU for 64 MiB of input (at least 64 MiB)"
        );
        let cpu_placed = placed(Place::Cpu);
        let placed_ask = Ask {
            placement: Some(&cpu_placed),
            ..ask("sql", auto)
        };
        assert_eq!(why(&placed_ask, None, 0), "placement chose the CPU");
        let ballista = Ask {
            engine: Engine::Ballista,
            ..ask("sql", auto)
        };
        assert_eq!(why(&ballista, None, 0), "engine: ballista");
        let split = Ask {
            shards: 4,
            ..ask("sql", auto)
        };
        assert_eq!(
            why(&split, NO_GPU, 0),
            "shards: 4 splits the query over the CPU"
        );
    }

    #[test]
    fn auto_takes_the_gpu_from_the_threshold_on() {
        assert_eq!(auto_choice(AUTO_GPU_BYTES - 1), None);
        assert_eq!(
            auto_choice(AUTO_GPU_BYTES * 2).as_deref(),
            Some("device: auto chose the GPU for 128 MiB of input (at least 64 MiB)")
        );
        let auto = ask("sql", DevicePreference::Auto);
        assert_eq!(
            route(&auto, None, || AUTO_GPU_BYTES).place(),
            Place::Gpu,
            "a usable GPU and big inputs"
        );
        assert_eq!(route(&auto, None, || 1).place(), Place::Cpu);
        assert_eq!(route(&auto, NO_GPU, never).place(), Place::Cpu);
    }

    #[test]
    fn kinds_without_a_gpu_path_say_so_when_asked_for_one() {
        let shell = route(&ask("shell", DevicePreference::Gpu), None, never);
        assert_eq!(
            shell.route,
            Route::Cpu {
                note: Some(
                    "device: gpu was asked for, but shell stages run only on the CPU".into()
                )
            }
        );
        let quiet = route(&ask("empty", DevicePreference::Auto), None, never);
        assert_eq!(quiet.route, Route::Cpu { note: None });
    }

    #[test]
    fn device_gpu_tries_the_gpu_even_where_none_is_usable() {
        // The executor says why it fell back; the route only says it was asked for.
        for kind in ["sql", "knn", "matmul", "score"] {
            let r = route(&ask(kind, DevicePreference::Gpu), NO_GPU, never);
            assert_eq!(r.gpu_asked(), Some("device: gpu was asked for"), "{kind}");
        }
        let cpu = route(&ask("sql", DevicePreference::Cpu), None, never);
        assert_eq!(cpu.route, Route::Cpu { note: None });
    }

    #[test]
    fn placement_decides_auto_stages_and_its_reason_is_kept() {
        let gpu = placed(Place::Gpu);
        let mut auto = ask("knn", DevicePreference::Auto);
        auto.placement = Some(&gpu);
        let r = route(&auto, None, never);
        assert_eq!(r.gpu_asked(), Some("placement chose the GPU"));
        assert_eq!(r.describe(), "route: gpu (placement chose the GPU)");
        let cpu = placed(Place::Cpu);
        auto.placement = Some(&cpu);
        assert_eq!(route(&auto, None, never).route, Route::Cpu { note: None });
        // A GPU lost since placement priced it is no place to go.
        auto.placement = Some(&gpu);
        assert_eq!(route(&auto, NO_GPU, never).place(), Place::Cpu);
    }

    #[test]
    fn queries_go_to_the_cluster_by_engine_or_by_placement() {
        let mut ballista = ask("sql", DevicePreference::Gpu);
        ballista.engine = Engine::Ballista;
        assert_eq!(
            route(&ballista, None, never).route,
            Route::Cluster {
                note: Some("device: gpu was asked for, but the task runs on Ballista".into())
            }
        );
        let cluster = placed(Place::Cluster);
        let mut auto = ask("sql", DevicePreference::Auto);
        auto.placement = Some(&cluster);
        assert_eq!(route(&auto, None, never).place(), Place::Cluster);
        // Only queries go there.
        let mut knn = ask("knn", DevicePreference::Auto);
        knn.placement = Some(&cluster);
        assert_eq!(route(&knn, None, never).place(), Place::Cpu);
    }

    #[test]
    fn split_queries_share_their_parts_by_lanes() {
        let mut split = ask("sql", DevicePreference::Cpu);
        split.shards = 4;
        let lanes_of = |r: Routed| match r.route {
            Route::Split { parts, lanes, note } => (parts, lanes, note),
            other => panic!("not split: {other:?}"),
        };
        assert_eq!(lanes_of(route(&split, None, never)), (4, Vec::new(), None));
        split.device = DevicePreference::Gpu;
        let (_, lanes, note) = lanes_of(route(&split, None, never));
        assert_eq!((lanes.len(), lanes[0].place, note), (1, Place::Gpu, None));
        let (_, lanes, note) = lanes_of(route(&split, NO_GPU, never));
        assert!(lanes.is_empty());
        assert_eq!(
            note.as_deref(),
            Some("device: gpu was asked for, but no GPU is usable here (no CUDA driver)")
        );
        split.device = DevicePreference::Auto;
        let (_, lanes, note) = lanes_of(route(&split, None, never));
        assert!(lanes.is_empty());
        assert!(note.unwrap().contains("amdahl calibrate"));
        let gpu = placed(Place::Gpu);
        split.placement = Some(&gpu);
        let (_, lanes, _) = lanes_of(route(&split, None, never));
        assert_eq!(lanes.len(), 2, "the CPU and the GPU share the parts");
    }
}
