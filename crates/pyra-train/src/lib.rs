//! Pyra training: the papers' recipes as one configuration file, run, checkpointed and resumed
//! exactly.
//!
//! config (TOML) -> data (cached images, patches, augmentation, degradation, prefetch) ->
//! step (forward, loss, backward, Adam) -> run (schedule, validation, checkpoints, logs, plots).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod legs;
pub mod optim;
pub mod plot;
pub mod run;
pub mod step;
pub mod validate;

pub use config::{parse_run, preset, read_run, LossKind, RunConfig, PRESETS};
pub use run::{train, RunOptions, RunSummary, Stop};
pub use step::{Loss, StepStats, Trainer};
