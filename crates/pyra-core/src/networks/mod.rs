//! Networks, one file each, with fields named after the official state-dict keys.

pub mod any;
pub mod arch;
pub mod attention;
pub mod blind_panet;
pub mod body;
pub mod cost;
pub mod detect;
pub mod dncnn;
pub mod edsr;
pub mod ffdnet;
pub mod memnet;
pub mod paedsr;
pub mod panet;
pub mod pnen;
pub mod rdn;

pub use any::{AnyNetwork, Arch, ArchConfig};
pub use arch::{Architecture, MemoryShape};
pub use blind_panet::{BlindPaNet, BlindPaNetConfig, MiddleBlock};
pub use body::BodyLayer;
pub use detect::{detect, Detected};
pub use dncnn::{Dncnn, DncnnConfig};
pub use edsr::{Edsr, EdsrConfig};
pub use ffdnet::{Ffdnet, FfdnetConfig};
pub use memnet::{MemNet, MemNetConfig};
pub use paedsr::{PaEdsr, PaEdsrConfig};
pub use panet::{PaNet, PaNetConfig};
pub use pnen::{Pnen, PnenConfig};
pub use rdn::{Rdn, RdnConfig};
