//! Loading and (re)initialising one member's PKCS#11 module, and finding its token.
//!
//! A module reads its environment (SoftHSM2's `SOFTHSM2_CONF`) at `C_Initialize`, so the
//! member's `env` is applied around that call under a process-wide lock. This is the only
//! place hsm-kms changes its own environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::slot::Slot;

use super::error::{Failure, HsmError};
use crate::config::TokenSelector;

/// Serialises `C_Initialize` calls together with the environment they read.
static INITIALIZE_LOCK: Mutex<()> = Mutex::new(());

/// Loads the module library (without initialising it).
pub fn load(member: &str, path: &Path) -> Result<Pkcs11, HsmError> {
    if !path.exists() {
        return Err(HsmError::new(
            member,
            Failure::ModuleMissing(path.to_owned()),
        ));
    }
    Pkcs11::new(path).map_err(|error| HsmError::new(member, Failure::ModuleLoad(error.to_string())))
}

/// Calls `C_Initialize` with the member's environment applied.
pub fn initialize(
    member: &str,
    pkcs11: &Pkcs11,
    env: &BTreeMap<String, String>,
) -> Result<(), HsmError> {
    let _serialised = INITIALIZE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let saved: Vec<(&String, Option<OsString>)> = env
        .keys()
        .map(|name| (name, std::env::var_os(name)))
        .collect();
    for (name, value) in env {
        set_env(name, Some(value.as_ref()));
    }
    let result = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    for (name, value) in saved {
        set_env(name, value.as_deref());
    }
    match result {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(error) => Err(HsmError::new(
            member,
            Failure::ModuleLoad(error.to_string()),
        )),
    }
}

/// Calls `C_Finalize`, ending every session of the module in this process.
pub fn finalize(pkcs11: &Pkcs11) {
    if let Err(error) = pkcs11.clone().finalize() {
        tracing::debug!(%error, "C_Finalize failed");
    }
}

#[allow(unsafe_code)]
fn set_env(name: &str, value: Option<&std::ffi::OsStr>) {
    // SAFETY: environment changes happen only here, under INITIALIZE_LOCK, around
    // C_Initialize; hsm-kms itself reads no environment variable while a cluster is opening.
    unsafe {
        match value {
            Some(value) => std::env::set_var(name, value),
            None => std::env::remove_var(name),
        }
    }
}

/// Finds the slot whose initialised token matches `selector`. Slots that fail to answer are
/// skipped: one broken token must not hide the others.
pub fn find_slot(
    member: &str,
    pkcs11: &Pkcs11,
    selector: &TokenSelector,
) -> Result<Slot, HsmError> {
    let slots = pkcs11
        .get_all_slots()
        .map_err(|error| HsmError::pkcs11(member, error))?;
    for slot in slots {
        let Ok(info) = pkcs11.get_token_info(slot) else {
            continue;
        };
        if info.token_initialized()
            && selector.matches(
                info.label(),
                info.serial_number(),
                info.manufacturer_id(),
                info.model(),
            )
        {
            return Ok(slot);
        }
    }
    Err(HsmError::new(
        member,
        Failure::TokenMissing(selector.to_string()),
    ))
}
