//! The task kinds with settings of their own: the dense kinds (`knn`, `matmul`, `score`),
//! `generate`, and `wait` (a sensor).

use std::path::PathBuf;

use super::Located;
use crate::yaml::Span;

/// A table a dense task reads: an upstream task's output or a dataset, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub name: String,
    pub span: Span,
}

/// How `knn` measures closeness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Inner product; larger is closer.
    Dot,
    /// Cosine similarity; larger is closer.
    Cosine,
    /// Euclidean distance; smaller is closer.
    L2,
}

impl Metric {
    pub const NAMES: [&'static str; 3] = ["dot", "cosine", "l2"];

    pub fn parse(text: &str) -> Option<Metric> {
        match text {
            "dot" => Some(Metric::Dot),
            "cosine" => Some(Metric::Cosine),
            "l2" => Some(Metric::L2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Dot => "dot",
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Knn {
    pub base: TableRef,
    pub queries: TableRef,
    /// The vector column, in both tables.
    pub column: String,
    pub k: u32,
    pub metric: Metric,
}

#[derive(Clone, Debug)]
pub struct Matmul {
    pub left: TableRef,
    pub right: TableRef,
    /// The vector column, in both tables (all vectors of one length).
    pub column: String,
}

/// The nonlinearity between an MLP's layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    pub const NAMES: [&'static str; 3] = ["relu", "tanh", "sigmoid"];

    pub fn parse(text: &str) -> Option<Activation> {
        match text {
            "relu" => Some(Activation::Relu),
            "tanh" => Some(Activation::Tanh),
            "sigmoid" => Some(Activation::Sigmoid),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Score {
    pub input: TableRef,
    pub column: String,
    /// The safetensors file: `<layer>.weight` (out × in) and `<layer>.bias` (out) per layer,
    /// layers in the order of their names. Relative paths are from the DAG file's folder.
    pub model: PathBuf,
    pub activation: Activation,
}

/// A synthetic data source.
#[derive(Clone, Debug)]
pub enum Generate {
    Tpch {
        table: TpchTable,
        /// A template that must render to a positive number.
        scale_factor: Located,
    },
    /// `rows` random vectors of `dim` floats, uniform in [-1, 1): columns `id` and `vector`.
    /// The same seed gives the same vectors.
    Vectors { rows: u64, dim: u32, seed: u64 },
}

/// The eight TPC-H tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpchTable {
    Region,
    Nation,
    Supplier,
    Customer,
    Part,
    PartSupp,
    Orders,
    LineItem,
}

impl TpchTable {
    pub const NAMES: [&'static str; 8] = [
        "region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem",
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "region" => TpchTable::Region,
            "nation" => TpchTable::Nation,
            "supplier" => TpchTable::Supplier,
            "customer" => TpchTable::Customer,
            "part" => TpchTable::Part,
            "partsupp" => TpchTable::PartSupp,
            "orders" => TpchTable::Orders,
            "lineitem" => TpchTable::LineItem,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TpchTable::Region => "region",
            TpchTable::Nation => "nation",
            TpchTable::Supplier => "supplier",
            TpchTable::Customer => "customer",
            TpchTable::Part => "part",
            TpchTable::PartSupp => "partsupp",
            TpchTable::Orders => "orders",
            TpchTable::LineItem => "lineitem",
        }
    }
}

/// `wait:`: a sensor. Each poke checks once whether what it waits for is there; when it is
/// not, the task gives its worker slot back and waits `poke` for the next (as a retry waits),
/// until `timeout` from its first poke has passed.
#[derive(Clone, Debug)]
pub struct Wait {
    pub probe: Probe,
    pub poke: std::time::Duration,
    pub timeout: std::time::Duration,
    /// A timeout skips the task instead of failing it.
    pub soft_fail: bool,
}

/// Default time between two pokes of a `wait:` task.
pub const DEFAULT_POKE: std::time::Duration = std::time::Duration::from_secs(60);
/// Default time a `wait:` task waits from its first poke (Airflow's sensors: 7 days).
pub const DEFAULT_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
/// Shortest time between two pokes.
pub const MIN_POKE: std::time::Duration = std::time::Duration::from_secs(1);

/// What a `wait:` task checks on each poke.
#[derive(Clone, Debug)]
pub enum Probe {
    /// A file or an object exists there (a `uri` ending in `/`: anything under that prefix).
    Uri {
        /// As written (a template when `templated`), rendered for each run.
        uri: String,
        templated: bool,
        /// Where a sample run's check would look, with the `options` given.
        location: super::Location,
        span: Span,
    },
    /// A query over the task's inputs (`needs` and datasets) whose one row's one boolean
    /// column says whether to go on.
    Sql(Located),
}

impl Wait {
    /// Where this run's poke looks, for a `uri` probe (see [`super::Dataset::location_for`]).
    pub fn location_for(
        &self,
        ctx: &crate::RunContext,
        base_dir: &std::path::Path,
    ) -> Option<Result<super::Location, String>> {
        match &self.probe {
            Probe::Uri {
                uri,
                templated,
                location,
                ..
            } => Some(
                super::run_location(uri, *templated, location, ctx, base_dir)
                    .map_err(|e| format!("wait.uri: {e}")),
            ),
            Probe::Sql(_) => None,
        }
    }
}
