//! Loading and (re)initialising one member's PKCS#11 module, and finding its token.
//!
//! # The environment, without changing it under running threads
//!
//! A module reads its environment at `C_Initialize` (SoftHSM2 reads the file named by
//! `SOFTHSM2_CONF`), and members want different values: each SoftHSM2 member has its own
//! configuration file. Setting an environment variable while another thread may read the
//! environment is undefined behaviour: Rust's own accessors take a lock, but C code does not
//! (`getenv` in the resolver, in a PKCS#11 module, in `localtime`). So hsm-kms changes the
//! environment only in [`prepare_environment`] / [`prepare_switches`], which the caller runs
//! before any other thread exists (the `hsm-kms` binary does so first thing after reading its
//! config), and never again. There each variable the members name is set once:
//!
//! - to the members' common value when they all agree on it;
//! - otherwise to this process's *switch* for it: a path in a private directory
//!   (`<temp>/hsm-kms-env-<pid>/<NAME>`). [`initialize`] makes that path a symbolic link to
//!   the member's value, calls `C_Initialize`, then removes link and directory again, all
//!   under one process-wide lock that every `C_Initialize` and `C_Finalize` takes. The
//!   environment stays the same; what the module reads through it is the member's file.
//!   A variable members disagree on must therefore name a file that the module reads
//!   during `C_Initialize` (as `SOFTHSM2_CONF` does).
//!
//! A member whose value the environment does not deliver, because nothing was prepared
//! (e.g. a library caller that skipped the preparation), is refused with an error that says
//! so, instead of the environment being changed under running threads.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::slot::Slot;

use super::error::{Failure, HsmError};
use crate::config::{Config, Replication, TokenSelector};

/// Serialises `C_Initialize` and `C_Finalize` calls together with the switches they read.
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

/// Sets, once, every environment variable the configured members' `env` tables name: to
/// the members' common value, or to this process's switch when they differ.
///
/// # Safety
///
/// No other thread may exist yet (call it first thing in `main`): it sets environment
/// variables, which is undefined behaviour while another thread may read the environment.
#[allow(unsafe_code)]
pub unsafe fn prepare_environment(config: &Config) {
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for cluster in config.clusters.values() {
        let members = match cluster.replication {
            Replication::HsmKms => cluster.members.iter().collect::<Vec<_>>(),
            Replication::Vendor => cluster.slot.iter().collect(),
        };
        for member in members {
            for (name, value) in &member.env {
                values.entry(name).or_default().insert(value);
            }
        }
    }
    for (name, seen) in values {
        match seen.first() {
            // SAFETY: the caller guarantees that no other thread exists.
            Some(value) if seen.len() == 1 => unsafe { std::env::set_var(name, value) },
            // SAFETY: as above.
            _ => unsafe { prepare_switches([name]) },
        }
    }
}

/// Points each of `names` at this process's switch for it, so members may differ on it.
///
/// # Safety
///
/// As [`prepare_environment`]: no other thread may exist yet.
#[allow(unsafe_code)]
pub unsafe fn prepare_switches<'a>(names: impl IntoIterator<Item = &'a str>) {
    for name in names {
        let switch = switch_path(name);
        // SAFETY: the caller guarantees that no other thread exists.
        unsafe { std::env::set_var(name, switch) };
    }
}

/// This process's switch for variable `name`.
fn switch_path(name: &str) -> PathBuf {
    switch_dir().join(name)
}

fn switch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("hsm-kms-env-{}", std::process::id()))
}

/// Calls `C_Initialize` with the member's environment in effect (see the module docs).
pub fn initialize(
    member: &str,
    pkcs11: &Pkcs11,
    env: &BTreeMap<String, String>,
) -> Result<(), HsmError> {
    let _serialised = INITIALIZE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let switched = point_switches(env).map_err(|reason| {
        remove_switches(env);
        HsmError::new(member, Failure::ModuleLoad(reason))
    })?;
    let result = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    if switched {
        remove_switches(env);
    }
    match result {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(error) => Err(HsmError::new(
            member,
            Failure::ModuleLoad(error.to_string()),
        )),
    }
}

/// Makes every variable of `env` deliver the member's value: already set to it, or pointing
/// at a switch that is linked to it now. Returns whether any switch was linked.
fn point_switches(env: &BTreeMap<String, String>) -> Result<bool, String> {
    let mut links = Vec::new();
    for (name, value) in env {
        let current = std::env::var_os(name);
        if current.as_deref() == Some(OsStr::new(value)) {
            continue;
        }
        let switch = switch_path(name);
        if current.as_deref() != Some(switch.as_os_str()) {
            return Err(format!(
                "environment variable {name} is not prepared for this member (call \
                 hsm_kms::hsm::prepare_environment before starting threads, or set {name} to \
                 the member's value)"
            ));
        }
        links.push((switch, Path::new(value)));
    }
    if links.is_empty() {
        return Ok(false);
    }
    fresh_switch_dir().map_err(|error| format!("cannot create the switch directory: {error}"))?;
    for (switch, target) in links {
        std::os::unix::fs::symlink(target, &switch)
            .map_err(|error| format!("cannot link {}: {error}", switch.display()))?;
    }
    Ok(true)
}

/// Creates the switch directory afresh and exclusively (mode 0700), so no link in it can be
/// planted by anyone else; one left by a crashed process with the same id is removed first.
fn fresh_switch_dir() -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = switch_dir();
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    std::fs::DirBuilder::new().mode(0o700).create(&dir)
}

/// Removes the switches of `env` and, when empty, their directory: nothing is left behind.
fn remove_switches(env: &BTreeMap<String, String>) {
    for name in env.keys() {
        let _ = std::fs::remove_file(switch_path(name));
    }
    let _ = std::fs::remove_dir(switch_dir());
}

/// Calls `C_Finalize`, ending every session of the module in this process.
pub fn finalize(pkcs11: &Pkcs11) {
    let _serialised = INITIALIZE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(error) = pkcs11.clone().finalize() {
        tracing::debug!(%error, "C_Finalize failed");
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
