//! Strict loading of a [`StateDict`] into a burn module, and the reverse.
//!
//! A module's parameters are addressed by the same dotted path as in PyTorch's `state_dict()`:
//! struct fields, `Vec` indices and tuple indices give the path segments, and enum variants are
//! transparent (an enum stands for "one of several layer kinds at this index of a
//! `nn.Sequential`"). Field names in Pyra's modules are the official state-dict names, so no
//! renaming table exists anywhere.
//!
//! Parameters that share one `ParamId` are one tensor with several keys (PANet's shared
//! res-block PReLU, PA-EDSR's `msa.*` == `body.16.*`). Loading requires every alias key to be
//! present with identical values and gives all of them one tensor, so gradients of all uses
//! accumulate into it, exactly as in PyTorch.

use std::any::Any;
use std::collections::{HashMap, HashSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Gradients;
use burn::tensor::{Tensor, TensorData};

use super::{NamedTensor, StateDict, TensorValues, WeightsError};

/// How strict loading is.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Accept keys the model does not have (default: an error naming them).
    pub allow_extra: bool,
    /// Keys the official module has but Pyra does not model as parameters (for example
    /// BatchNorm's `num_batches_tracked`): suffixes that are accepted and skipped.
    pub known_unused_suffixes: Vec<String>,
}

/// What a successful load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Distinct parameter tensors set.
    pub parameters: usize,
    /// Keys that were present in the file but not used (only when extra keys are allowed or
    /// known-unused).
    pub skipped: Vec<String>,
    /// Groups of keys that name one shared tensor.
    pub aliases: Vec<Vec<String>>,
}

/// Tracks the dotted path while burn walks a module.
#[derive(Default)]
struct PathTracker {
    segments: Vec<Option<String>>,
}

impl PathTracker {
    fn enter(&mut self, name: &str, container_type: &str) {
        // Enum variants do not appear in state-dict keys.
        if container_type.starts_with("Enum:") {
            self.segments.push(None);
        } else {
            self.segments.push(Some(name.to_string()));
        }
    }
    fn exit(&mut self) {
        self.segments.pop();
    }
    fn path(&self) -> String {
        self.segments
            .iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// A parameter as the module declares it.
struct Slot {
    path: String,
    id: ParamId,
    shape: Vec<usize>,
    trainable: bool,
}

#[derive(Default)]
struct SlotCollector {
    tracker: PathTracker,
    slots: Vec<Slot>,
}

impl ModuleVisitor for SlotCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.slots.push(Slot {
            path: self.tracker.path(),
            id: param.id,
            shape: param.lazy_shape().to_vec(),
            trainable: param.is_require_grad(),
        });
    }
}

fn collect_slots<M: Module>(module: &M) -> Vec<Slot> {
    let mut collector = SlotCollector::default();
    module.visit(&mut collector);
    collector.slots
}

struct Loader<'a> {
    tracker: PathTracker,
    dict: HashMap<&'a str, &'a NamedTensor>,
    shared: HashMap<ParamId, Box<dyn Any + Send>>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        if let Some(tensor) = self.shared.get(&id) {
            let tensor = tensor
                .downcast_ref::<Tensor<D>>()
                .expect("parameters sharing an id have one rank")
                .clone();
            return Param::initialized(id, tensor).set_require_grad(param.is_require_grad());
        }
        let path = self.tracker.path();
        let entry = self.dict[path.as_str()];
        let data = TensorData::new(entry.to_f32(), entry.shape.clone());
        let tensor = Tensor::<D>::from_data(data, &param.lazy_device());
        let loaded = param.transform_for_load(tensor, id);
        self.shared.insert(id, Box::new(loaded.val()));
        loaded
    }
}

fn matches_known_unused(name: &str, options: &LoadOptions) -> bool {
    options
        .known_unused_suffixes
        .iter()
        .any(|suffix| name.ends_with(suffix.as_str()))
}

/// BatchNorm's `num_batches_tracked` is known and unused where the module has the sibling
/// `running_mean` (inference never reads the counter).
fn is_batch_norm_counter(name: &str, expected: &HashSet<&str>) -> bool {
    name.strip_suffix("num_batches_tracked")
        .is_some_and(|prefix| expected.contains(format!("{prefix}running_mean").as_str()))
}

fn list(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut text = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        text.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    text
}

/// Load `dict` into `module`, strictly: every key of the module must be in the dict with the
/// same shape, aliased keys must agree, and (unless allowed) the dict must have no other keys.
/// Errors name the offending keys.
pub fn load_state_dict<M: Module>(
    module: M,
    dict: &StateDict,
    options: &LoadOptions,
) -> Result<(M, LoadReport), WeightsError> {
    let slots = collect_slots(&module);
    let by_name: HashMap<&str, &NamedTensor> =
        dict.tensors.iter().map(|t| (t.name.as_str(), t)).collect();

    let mut missing = Vec::new();
    let mut wrong_shape = Vec::new();
    let mut wrong_type = Vec::new();
    let mut not_finite = Vec::new();
    for slot in &slots {
        match by_name.get(slot.path.as_str()) {
            None => missing.push(slot.path.clone()),
            Some(t) if t.shape != slot.shape => wrong_shape.push(format!(
                "`{}` has shape {:?} in the checkpoint but the model expects {:?}",
                slot.path, t.shape, slot.shape
            )),
            Some(t) if matches!(t.values, TensorValues::I64(_)) => wrong_type.push(format!(
                "`{}` is an integer tensor ({}) in the checkpoint but a float parameter in the model",
                slot.path, t.source_dtype
            )),
            Some(t) => {
                if let TensorValues::F32(values) = &t.values {
                    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                        not_finite.push(format!(
                            "`{}` holds {} at element {i} (a diverged or corrupted training run?)",
                            slot.path, values[i]
                        ));
                    }
                }
            }
        }
    }

    // Aliases: one id, several keys; all must hold the same values.
    let mut groups: HashMap<ParamId, Vec<&str>> = HashMap::new();
    let mut order: Vec<ParamId> = Vec::new();
    for slot in &slots {
        let group = groups.entry(slot.id).or_default();
        if group.is_empty() {
            order.push(slot.id);
        }
        group.push(slot.path.as_str());
    }
    let mut alias_groups = Vec::new();
    let mut disagreeing = Vec::new();
    for id in &order {
        let keys = &groups[id];
        if keys.len() < 2 {
            continue;
        }
        alias_groups.push(keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        let first = by_name.get(keys[0]);
        for other in &keys[1..] {
            if let (Some(a), Some(b)) = (first, by_name.get(other)) {
                if a.values != b.values || a.shape != b.shape {
                    disagreeing.push(format!(
                        "`{}` and `{other}` must be one shared tensor (as in the official model) \
                         but hold different values",
                        keys[0]
                    ));
                }
            }
        }
    }

    let expected: HashSet<&str> = slots.iter().map(|s| s.path.as_str()).collect();
    let mut unexpected = Vec::new();
    let mut skipped = Vec::new();
    for t in &dict.tensors {
        if expected.contains(t.name.as_str()) {
            continue;
        }
        if options.allow_extra
            || matches_known_unused(&t.name, options)
            || is_batch_norm_counter(&t.name, &expected)
        {
            skipped.push(t.name.clone());
        } else {
            unexpected.push(t.name.clone());
        }
    }

    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing key(s) {}", list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "unexpected key(s) {} (renamed, or from another architecture?)",
            list(&unexpected)
        ));
    }
    problems.extend(wrong_shape);
    problems.extend(wrong_type);
    problems.extend(not_finite);
    problems.extend(disagreeing);
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch(problems.join("; ")));
    }

    let mut loader = Loader {
        tracker: PathTracker::default(),
        dict: by_name,
        shared: HashMap::new(),
    };
    let module = module.map(&mut loader);
    let report = LoadReport {
        parameters: order.len(),
        skipped,
        aliases: alias_groups,
    };
    Ok((module, report))
}

struct Exporter {
    tracker: PathTracker,
    dict: StateDict,
}

impl ModuleVisitor for Exporter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data().convert::<f32>();
        let shape = data.shape().to_vec();
        let values = data.try_into_vec::<f32>().expect("converted to f32");
        self.dict
            .push(NamedTensor::f32(self.tracker.path(), shape, values));
    }
}

/// The module's parameters under their state-dict keys (aliases written once per key, as
/// PyTorch's `state_dict()` does).
pub fn state_dict_of<M: Module>(module: &M) -> StateDict {
    let mut exporter = Exporter {
        tracker: PathTracker::default(),
        dict: StateDict::default(),
    };
    module.visit(&mut exporter);
    exporter.dict
}

struct Tier {
    shared: HashMap<ParamId, Box<dyn Any + Send>>,
}

impl ModuleMapper for Tier {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        if let Some(tensor) = self.shared.get(&id) {
            let tensor = tensor
                .downcast_ref::<Tensor<D>>()
                .expect("parameters sharing an id have one rank")
                .clone();
            return Param::initialized(id, tensor).set_require_grad(param.is_require_grad());
        }
        self.shared.insert(id, Box::new(param.val()));
        param
    }
}

/// Make every group of parameters that share a `ParamId` hold the first one's tensor again.
/// An optimizer step updates a shared parameter at its first occurrence only; calling this
/// after the step restores the official weight sharing.
pub fn tie_shared_params<M: Module>(module: M) -> M {
    module.map(&mut Tier {
        shared: HashMap::new(),
    })
}

struct GradientExporter<'a> {
    tracker: PathTracker,
    grads: &'a Gradients,
    dict: StateDict,
}

impl ModuleVisitor for GradientExporter<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = param.val().grad(self.grads) {
            let data = grad.into_data().convert::<f32>();
            let shape = data.shape().to_vec();
            let values = data.try_into_vec::<f32>().expect("converted to f32");
            self.dict
                .push(NamedTensor::f32(self.tracker.path(), shape, values));
        }
    }
}

/// The gradient of every trainable parameter under its state-dict key, after
/// `loss.backward()`. A shared parameter appears under each of its keys with the summed
/// gradient of all its uses (as PyTorch reports it).
pub fn gradients_of<M: Module>(module: &M, grads: &Gradients) -> StateDict {
    let mut exporter = GradientExporter {
        tracker: PathTracker::default(),
        grads,
        dict: StateDict::default(),
    };
    module.visit(&mut exporter);
    exporter.dict
}

/// For every parameter key that aliases an earlier one (same `ParamId`), the earlier key:
/// `{"body.3.body.1.weight": "body.0.body.1.weight", ...}`. Optimisers keep one state per
/// shared tensor, as PyTorch's `parameters()` yields a shared parameter once.
pub fn alias_map<M: Module>(module: &M) -> HashMap<String, String> {
    let mut first: HashMap<ParamId, String> = HashMap::new();
    let mut aliases = HashMap::new();
    for slot in collect_slots(module) {
        match first.get(&slot.id) {
            Some(primary) => {
                aliases.insert(slot.path, primary.clone());
            }
            None => {
                first.insert(slot.id, slot.path);
            }
        }
    }
    aliases
}

/// The keys of the parameters an optimiser updates (frozen ones such as `MeanShift` and the
/// attention's `escape_NaN` buffer are left out).
pub fn trainable_keys<M: Module>(module: &M) -> HashSet<String> {
    collect_slots(module)
        .into_iter()
        .filter(|slot| slot.trainable)
        .map(|slot| slot.path)
        .collect()
}
