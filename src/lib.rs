//! hsm-kms: an embedded, HSM-backed key store modelled on AWS KMS.

pub mod audit;
pub mod caller;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod compliance;
pub mod config;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod fault;
pub mod hsm;
pub mod ids;
pub mod key_import;
pub mod keys;
pub mod keystore;
pub mod policy;
pub mod server;
pub mod store;
