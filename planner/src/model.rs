//! A scoring model (`score` tasks): a multi-layer perceptron read from a safetensors file and
//! checked (names, shapes, dtypes), so validation and estimates know its widths. Running it is
//! the executors' (`linalg::Forward`).

use std::path::Path;

use amdahl_dags::Activation;

/// A tensor's shape and values.
type Tensor = (Vec<usize>, Vec<f32>);

/// One dense layer: `out = W · in + b`, W row-major (out × in).
#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A multi-layer perceptron: the activation between layers, none after the last.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub layers: Vec<Layer>,
    pub activation: Activation,
}

impl Mlp {
    /// Reads `<layer>.weight` (out × in) and optional `<layer>.bias` (out) tensors; layers in
    /// the order of their names, numbers compared as numbers (`2` before `10`).
    pub fn load(path: &Path, activation: Activation) -> Result<Mlp, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("{} is not a safetensors file: {e}", path.display()))?;
        let mut names: Vec<String> = Vec::new();
        for name in tensors.names() {
            let Some((layer, part)) = name.rsplit_once('.') else {
                return Err(format!(
                    "tensor `{name}`: names must be `<layer>.weight` or `<layer>.bias`"
                ));
            };
            if part != "weight" && part != "bias" {
                return Err(format!(
                    "tensor `{name}`: names must be `<layer>.weight` or `<layer>.bias`"
                ));
            }
            if !names.iter().any(|n| n == layer) {
                names.push(layer.to_string());
            }
        }
        names.sort_by_key(|a| natural(a));
        if names.is_empty() {
            return Err(format!("{} holds no layers", path.display()));
        }
        let floats = |name: &str| -> Result<Option<Tensor>, String> {
            let Ok(view) = tensors.tensor(name) else {
                return Ok(None);
            };
            let data = view.data();
            let values = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
                safetensors::Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
                other => {
                    return Err(format!(
                        "tensor `{name}` is {other:?}; save the model as float32 or float64"
                    ));
                }
            };
            Ok(Some((view.shape().to_vec(), values)))
        };
        let mut layers: Vec<Layer> = Vec::new();
        for name in names {
            let Some((shape, weight)) = floats(&format!("{name}.weight"))? else {
                return Err(format!("layer `{name}` has a bias but no `{name}.weight`"));
            };
            let [outputs, inputs] = shape[..] else {
                return Err(format!(
                    "`{name}.weight` has shape {shape:?}; a layer's weight is (outputs, inputs)"
                ));
            };
            let bias = match floats(&format!("{name}.bias"))? {
                Some((shape, bias)) if shape == [outputs] => bias,
                Some((shape, _)) => {
                    return Err(format!(
                        "`{name}.bias` has shape {shape:?}; expected [{outputs}]"
                    ));
                }
                None => vec![0.0; outputs],
            };
            if let Some(previous) = layers.last()
                && previous.outputs != inputs
            {
                return Err(format!(
                    "layer `{name}` takes {inputs} inputs but layer `{}` gives {}",
                    previous.name, previous.outputs
                ));
            }
            layers.push(Layer {
                name,
                inputs,
                outputs,
                weight,
                bias,
            });
        }
        Ok(Mlp { layers, activation })
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].inputs
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().expect("at least one layer").outputs
    }
}

/// A layer name as parts, numbers compared as numbers.
pub fn natural(name: &str) -> Vec<(u64, String)> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                parts.push((0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                parts.push((digits.parse().unwrap_or(u64::MAX), String::new()));
                digits.clear();
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        parts.push((digits.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !text.is_empty() {
        parts.push((0, text));
    }
    parts
}
