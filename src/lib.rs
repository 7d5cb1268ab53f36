#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

/// `crash_point!("name")` aborts the process when `HSM_KMS_CRASH_AT` names that point (see
/// [`fault`]), with the `fault-injection` feature; without it, it expands to nothing.
macro_rules! crash_point {
    ($point:literal) => {
        #[cfg(feature = "fault-injection")]
        $crate::fault::crash_point($point);
    };
}

pub mod audit;
pub mod caller;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod compliance;
pub mod config;
pub mod crypto;
pub mod envelope;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod hsm;
pub mod ids;
pub mod key_import;
pub mod keys;
pub mod keystore;
pub mod policy;
#[cfg(feature = "server")]
pub mod server;
pub mod store;
