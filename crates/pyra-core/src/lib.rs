//! Pyra core: tensor backend, operations, blocks, networks and checkpoint I/O.
//!
//! Layers, each using only those before it: [`backend`] -> [`ops`] -> [`blocks`] ->
//! [`networks`]; [`weights`] reads and writes the parameters of any module by its official
//! state-dict keys.

pub mod backend;
pub mod blocks;
pub mod fs;
pub mod networks;
pub mod ops;
pub mod weights;

pub use burn;

/// Worker threads of the kernels (rayon's pool: `RAYON_NUM_THREADS`, else every core).
pub fn rayon_threads() -> usize {
    rayon::current_num_threads()
}
