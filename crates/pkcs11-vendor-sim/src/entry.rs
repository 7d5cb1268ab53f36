//! The PKCS#11 entry points the module implements: each checks its pointers, takes the
//! module's state lock and hands safe values to [`Cluster`]. These are the functions hsm-kms
//! calls; `function_list` answers every other one with `CKR_FUNCTION_NOT_SUPPORTED`.
#![allow(non_snake_case)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard};

use cryptoki_sys::*;

use crate::backing::Rv;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::function_list::FUNCTION_LIST;

/// The id of the module's one slot.
const SLOT_ID: CK_SLOT_ID = 1;

/// The module's state: `None` until `C_Initialize` and after `C_Finalize`.
static STATE: Mutex<Option<Cluster>> = Mutex::new(None);

fn state() -> MutexGuard<'static, Option<Cluster>> {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `body` on the initialised module; a panic becomes `CKR_GENERAL_ERROR`.
fn with_cluster(body: impl FnOnce(&mut Cluster) -> Rv<()>) -> CK_RV {
    catch_unwind(AssertUnwindSafe(|| {
        let mut state = state();
        match state.as_mut() {
            Some(cluster) => code(body(cluster)),
            None => CKR_CRYPTOKI_NOT_INITIALIZED,
        }
    }))
    .unwrap_or(CKR_GENERAL_ERROR)
}

fn code(result: Rv<()>) -> CK_RV {
    match result {
        Ok(()) => CKR_OK,
        Err(rv) => rv,
    }
}

fn check_slot(slot: CK_SLOT_ID) -> Rv<()> {
    if slot == SLOT_ID {
        Ok(())
    } else {
        Err(CKR_SLOT_ID_INVALID)
    }
}

/// `length` bytes at `data` (empty for a null pointer with length 0).
///
/// # Safety
/// `data` must point at `length` readable bytes unless it is null.
unsafe fn bytes<'a>(data: *const u8, length: CK_ULONG) -> Rv<&'a [u8]> {
    match (data.is_null(), length) {
        (true, 0) => Ok(&[]),
        (true, _) => Err(CKR_ARGUMENTS_BAD),
        // SAFETY: as the caller promises.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(data, length as usize) }),
    }
}

/// A copy of the caller's template (the values still point at the caller's memory).
///
/// # Safety
/// `template` must point at `count` attributes unless it is null.
unsafe fn template(template: *const CK_ATTRIBUTE, count: CK_ULONG) -> Rv<Vec<CK_ATTRIBUTE>> {
    match (template.is_null(), count) {
        (true, 0) => Ok(Vec::new()),
        (true, _) => Err(CKR_ARGUMENTS_BAD),
        // SAFETY: as the caller promises.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(template, count as usize) }.to_vec()),
    }
}

/// Writes a blank-padded PKCS#11 string.
fn pad(out: &mut [u8], text: &str) {
    out.fill(b' ');
    let length = text.len().min(out.len());
    out[..length].copy_from_slice(&text.as_bytes()[..length]);
}

/// Hands out the module's function list.
///
/// # Safety
/// `list` must be null or point at writable memory for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    // SAFETY: checked for null; PKCS#11 callers never write through the returned list.
    unsafe { *list = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST };
    CKR_OK
}

pub unsafe extern "C" fn C_Initialize(_args: *mut c_void) -> CK_RV {
    catch_unwind(|| {
        let mut state = state();
        if state.is_some() {
            return CKR_CRYPTOKI_ALREADY_INITIALIZED;
        }
        let config = match Config::from_env() {
            Ok(config) => config,
            Err(message) => {
                eprintln!("pkcs11-vendor-sim: {message}");
                return CKR_GENERAL_ERROR;
            }
        };
        match Cluster::open(&config) {
            Ok(cluster) => {
                *state = Some(cluster);
                CKR_OK
            }
            Err(rv) => rv,
        }
    })
    .unwrap_or(CKR_GENERAL_ERROR)
}

pub unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    if !reserved.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    match state().take() {
        Some(cluster) => {
            cluster.finalize();
            CKR_OK
        }
        None => CKR_CRYPTOKI_NOT_INITIALIZED,
    }
}

pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    // SAFETY: the caller passes null or a writable CK_INFO.
    let Some(info) = (unsafe { info.as_mut() }) else {
        return CKR_ARGUMENTS_BAD;
    };
    *info = CK_INFO::default();
    info.cryptokiVersion = FUNCTION_LIST.version;
    info.libraryVersion = CK_VERSION { major: 0, minor: 1 };
    pad(&mut info.manufacturerID, "hsm-kms");
    pad(&mut info.libraryDescription, "vendor cluster simulator");
    CKR_OK
}

pub unsafe extern "C" fn C_GetSlotList(
    token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    with_cluster(|cluster| {
        // SAFETY: the caller passes null or a writable CK_ULONG.
        let count = unsafe { count.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)?;
        let slots: CK_ULONG = if token_present == CK_FALSE || cluster.token_present() {
            1
        } else {
            0
        };
        if !list.is_null() && slots > 0 {
            if *count < slots {
                *count = slots;
                return Err(CKR_BUFFER_TOO_SMALL);
            }
            // SAFETY: the caller's list holds at least *count >= 1 slot ids.
            unsafe { *list = SLOT_ID };
        }
        *count = slots;
        Ok(())
    })
}

pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    with_cluster(|cluster| {
        check_slot(slot)?;
        // SAFETY: the caller passes null or a writable CK_SLOT_INFO.
        let info = unsafe { info.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)?;
        pad(
            &mut info.slotDescription,
            "hsm-kms vendor cluster simulator",
        );
        pad(&mut info.manufacturerID, "hsm-kms");
        info.flags = CKF_HW_SLOT | CKF_REMOVABLE_DEVICE;
        if cluster.token_present() {
            info.flags |= CKF_TOKEN_PRESENT;
        }
        info.hardwareVersion = CK_VERSION { major: 0, minor: 1 };
        info.firmwareVersion = CK_VERSION { major: 0, minor: 1 };
        Ok(())
    })
}

pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    with_cluster(|cluster| {
        check_slot(slot)?;
        // SAFETY: the caller passes null or a writable CK_TOKEN_INFO.
        let info = unsafe { info.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)?;
        cluster.token_info(info)
    })
}

pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    with_cluster(|cluster| {
        check_slot(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        // SAFETY: the caller passes null or a writable handle.
        let session = unsafe { session.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)?;
        *session = cluster.open_session(flags)?;
        Ok(())
    })
}

pub unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    with_cluster(|cluster| cluster.close_session(session))
}

pub unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    with_cluster(|cluster| {
        check_slot(slot)?;
        cluster.close_all_sessions();
        Ok(())
    })
}

pub unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    with_cluster(|cluster| {
        // SAFETY: the caller's PIN is pin_len readable bytes.
        let pin = unsafe { bytes(pin, pin_len) }?;
        cluster.login(session, user, pin)
    })
}

pub unsafe extern "C" fn C_Logout(session: CK_SESSION_HANDLE) -> CK_RV {
    with_cluster(|cluster| cluster.logout(session))
}

pub unsafe extern "C" fn C_DestroyObject(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_cluster(|cluster| cluster.destroy(session, object))
}

pub unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    with_cluster(|cluster| {
        if template.is_null() && count > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        cluster.get_attributes(session, object, template, count)
    })
}

pub unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    template_ptr: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    with_cluster(|cluster| {
        // SAFETY: the caller's template holds count attributes.
        let mut template = unsafe { template(template_ptr, count) }?;
        cluster.find_init(session, &mut template)
    })
}

pub unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    with_cluster(|cluster| {
        // SAFETY: the caller passes null or a writable CK_ULONG.
        let count = unsafe { count.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)?;
        if objects.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: the caller's array holds max handles.
        let out = unsafe { std::slice::from_raw_parts_mut(objects, max as usize) };
        *count = cluster.find_next(session, out)? as CK_ULONG;
        Ok(())
    })
}

pub unsafe extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    with_cluster(|cluster| cluster.find_final(session))
}

pub unsafe extern "C" fn C_EncryptInit(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_cluster(|cluster| {
        if mechanism.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        cluster.encrypt_init(session, mechanism, key)
    })
}

pub unsafe extern "C" fn C_Encrypt(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    with_cluster(|cluster| {
        if out_len.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        cluster.encrypt(session, data, data_len, out, out_len)
    })
}

pub unsafe extern "C" fn C_DecryptInit(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_cluster(|cluster| {
        if mechanism.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        cluster.decrypt_init(session, mechanism, key)
    })
}

pub unsafe extern "C" fn C_Decrypt(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    with_cluster(|cluster| {
        if out_len.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        cluster.decrypt(session, data, data_len, out, out_len)
    })
}

pub unsafe extern "C" fn C_GenerateKey(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    template_ptr: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    with_cluster(|cluster| {
        // SAFETY: the caller passes null or a valid mechanism and handle.
        let (Some(mechanism), Some(key)) = (unsafe { mechanism.as_ref() }, unsafe { key.as_mut() })
        else {
            return Err(CKR_ARGUMENTS_BAD);
        };
        // SAFETY: the caller's template holds count attributes.
        let template = unsafe { template(template_ptr, count) }?;
        *key = cluster.generate_key(session, mechanism, &template)?;
        Ok(())
    })
}

pub unsafe extern "C" fn C_GenerateRandom(
    session: CK_SESSION_HANDLE,
    buffer: *mut CK_BYTE,
    length: CK_ULONG,
) -> CK_RV {
    with_cluster(|cluster| {
        if buffer.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: the caller's buffer holds length writable bytes.
        let buffer = unsafe { std::slice::from_raw_parts_mut(buffer, length as usize) };
        cluster.random(session, buffer)
    })
}
