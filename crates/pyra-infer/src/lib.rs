//! Pyra inference: running a restoration network over whole images.

pub mod chop;
pub mod restorer;

pub use chop::{forward_chop, ChopOptions};
pub use restorer::{Mode, Restorer};
