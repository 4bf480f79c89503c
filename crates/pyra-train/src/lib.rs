//! Pyra training: the optimisation step of the papers' recipes.

pub mod step;

pub use step::{Loss, Trainer};
