//! hsm-kms: an embedded, HSM-backed key store modelled on AWS KMS.

pub mod store;
