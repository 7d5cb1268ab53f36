//! hsm-kms: an embedded, HSM-backed key store modelled on AWS KMS.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod hsm;
