//! Where a `device: auto` task runs, decided just before it runs: the whole DAG is estimated
//! again with the real sizes of the outputs produced so far (each done task fixed where it
//! ran), priced on this worker's profile, and assigned by the minimum cut; the task goes where
//! that assignment puts it (with a cluster in the profile, a `sql` task may go there too: see
//! [`amdahl_placement::ClusterProfile`]). Deciding for the whole DAG keeps a cheap stage between two GPU
//! stages on the GPU when copying its data back and forth would cost more than it saves.

use std::collections::HashMap;

use amdahl_dags::{Dag, RunContext};
pub use amdahl_placement::Placement;
use amdahl_placement::{
    Place, Priced, Profile, edge_cost, main_kind, min_cut, price, seconds, why,
};

use crate::estimate::{Produced, estimate_run};

/// Places `task_id` of `dag`'s run on `profile`'s machine.
pub async fn place_task(
    dag: &Dag,
    context: &RunContext,
    task_id: &str,
    produced: &HashMap<String, Produced>,
    profile: &Profile,
) -> Result<Placement, String> {
    let graph = estimate_run(dag, context, produced).await?;
    let i = graph
        .stages
        .iter()
        .position(|s| s.id == task_id)
        .ok_or_else(|| format!("task `{task_id}` is not in the DAG"))?;
    let priced = price(profile, &graph);
    let chosen = min_cut(profile, &graph);
    // Copies into this task from upstreams the assignment leaves off the GPU.
    let incoming: f64 = graph
        .edges
        .iter()
        .filter(|(u, v, _)| *v == i && chosen.places[*u] != Place::Gpu)
        .map(|(_, _, bytes)| edge_cost(profile, *bytes))
        .sum();
    let p = Priced {
        cpu: priced[i].cpu,
        gpu: priced[i].gpu.clone().map(|mut g| {
            g.transfer_in += incoming;
            g
        }),
        cluster: priced[i].cluster.clone(),
    };
    let place = chosen.places[i];
    let gpu_seconds = p.gpu.as_ref().ok().map(|g| g.total());
    let cluster_seconds = p.cluster.as_ref().ok().copied();
    let mut reason = format!(
        "placement chose the {} ({}): CPU {}, GPU {}",
        match place {
            Place::Cluster => profile
                .cluster
                .as_ref()
                .map_or("cluster".into(), |c| format!("cluster {}", c.name)),
            other => other.name().to_string(),
        },
        why(&p, place),
        seconds(p.cpu),
        match &p.gpu {
            Ok(g) => format!(
                "{} (in {} + compute {} + out {})",
                seconds(g.total()),
                seconds(g.transfer_in),
                seconds(g.compute),
                seconds(g.transfer_out)
            ),
            Err(_) => "–".into(),
        }
    );
    if profile.cluster.is_some() {
        reason.push_str(&format!(
            ", cluster {}",
            cluster_seconds.map_or("–".into(), seconds)
        ));
    }
    let kind = main_kind(&profile.cpu, &graph.stages[i]);
    let (cpu_factor, gpu_factor) = amdahl_placement::cost::factors(profile, &graph.stages[i]);
    Ok(Placement {
        place,
        cpu_seconds: p.cpu,
        gpu_seconds,
        cluster_seconds,
        reason,
        kind,
        cpu_factor,
        gpu_factor,
        cpu_fixed_seconds: profile.cpu.fixed_seconds,
        gpu_fixed_seconds: profile.gpu.as_ref().map_or(0.0, |g| g.device.fixed_seconds),
    })
}
