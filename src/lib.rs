//! hsm-kms: an embedded, HSM-backed key store modelled on AWS KMS.

pub mod crypto;
pub mod error;
pub mod ids;
pub mod keys;
