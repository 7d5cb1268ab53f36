//! `pkcs11-vendor-sim`: a PKCS#11 module that behaves like a vendor-synchronised HSM cluster
//! (AWS CloudHSM) on top of SoftHSM2 tokens, so that hsm-kms's `replication = "vendor"` mode
//! runs against something vendor-like in tests. It is a test double, not an HSM.
//!
//! What it simulates:
//!
//! - **One slot, one token** whose label is `token_label`, standing for the whole cluster;
//!   the HSMs behind it are the `[[backing]]` SoftHSM2 tokens of its configuration, which
//!   must share the crypto user's PIN (`C_Login` logs in to every one).
//! - **Synchronised keys.** A key created with `C_GenerateKey` or destroyed with
//!   `C_DestroyObject` through the module is created or destroyed on every backing token.
//!   The key value is drawn from a backing token's generator into zeroized memory of the
//!   module and imported into each backing token with `C_CreateObject`, then wiped: this is
//!   the one way this fixture differs from a real cluster, whose HSMs synchronise keys among
//!   themselves without the value ever leaving them. The value is never stored, logged or
//!   returned. While a backing token is away, creating and destroying keys fails with
//!   `CKR_TOKEN_WRITE_PROTECTED` (other calls go on), so a key is always on every backing
//!   token.
//! - **HSM-chosen AES-GCM IVs.** Like CloudHSM, `C_EncryptInit` with `CKM_AES_GCM` ignores
//!   the caller's IV: it draws 12 random bytes and writes them into the caller's
//!   `CK_GCM_PARAMS` IV buffer (which must be 12 bytes long), and the ciphertext is made
//!   under that IV. A caller that keeps its own IV cannot decrypt.
//! - **HSMs that go away.** Every call goes to a backing token that is there, round-robin.
//!   A backing token `NAME` is away while the file `NAME.away` exists in the directory of the
//!   configuration file; removing the file brings it back (its sessions and login were kept).
//!   With every backing token away, calls fail with `CKR_DEVICE_ERROR` and the token is not
//!   present.
//!
//! Configuration: the environment variable `PKCS11_VENDOR_SIM_CONF` names a TOML file, read
//! at `C_Initialize`:
//!
//! ```toml
//! token_label = "cluster"
//!
//! [[backing]]
//! name = "hsm-a"                                  # control file: hsm-a.away
//! module = "/srv/sim/hsm-a/libsofthsm2-hsm-a.so"  # one copy of libsofthsm2.so per token
//! token = "hsm-a"                                 # label of the backing token
//! env = { SOFTHSM2_CONF = "/srv/sim/hsm-a/softhsm2.conf" }
//! ```
//!
//! Only the PKCS#11 functions hsm-kms calls in vendor mode are implemented (see `entry`);
//! the others return `CKR_FUNCTION_NOT_SUPPORTED`. This is the one crate of the workspace
//! where `unsafe` code is allowed: it is the FFI seam in both directions.

mod backing;
mod cluster;
mod config;
mod entry;
mod function_list;
