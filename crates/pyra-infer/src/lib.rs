//! Pyra inference: running a restoration network over whole images, whatever their size.

pub mod bundled;
pub mod chop;
pub mod ensemble;
pub mod memory;
pub mod open;
pub mod plan;
pub mod restorer;
pub mod tile;

pub use chop::{forward_chop, ChopOptions};
pub use ensemble::self_ensemble;
pub use open::{open, Model, OpenError};
pub use restorer::{Mode, Restorer};
pub use tile::{forward_tiled, forward_tiled_with_progress, TileOptions};
