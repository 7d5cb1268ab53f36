//! One backing SoftHSM2 token: its module loaded with `libloading`, initialised with its own
//! environment, its slot found by label, and thin wrappers that turn its `CK_RV`s into
//! `Result`s. A backing is "away" while the control file `NAME.away` exists; the module then
//! routes nothing to it. Libraries are loaded once per process and never unloaded.

use std::ffi::{OsString, c_void};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Mutex;

use cryptoki_sys::*;

use crate::config::BackingConfig;

/// A PKCS#11 result: the `CK_RV` of the first failed call.
pub type Rv<T> = Result<T, CK_RV>;

/// Function lists of the modules loaded so far, by path.
static LOADED: Mutex<Vec<(PathBuf, &'static CK_FUNCTION_LIST)>> = Mutex::new(Vec::new());

/// One initialised backing token.
pub struct Backing {
    functions: &'static CK_FUNCTION_LIST,
    slot: CK_SLOT_ID,
    away_file: PathBuf,
}

/// Calls function `$f` of the backing's list, mapping a missing entry and any `CK_RV` but
/// `CKR_OK` to `Err`.
macro_rules! call {
    ($backing:expr, $f:ident($($arg:expr),* $(,)?)) => {{
        match $backing.functions.$f {
            // SAFETY: the function comes from the backing module's own list; every caller
            // passes pointers valid for the duration of the call, as PKCS#11 requires.
            Some(function) => check(unsafe { function($($arg),*) }),
            None => Err(CKR_FUNCTION_NOT_SUPPORTED),
        }
    }};
}

/// `Ok` for `CKR_OK`, the code otherwise.
pub fn check(rv: CK_RV) -> Rv<()> {
    if rv == CKR_OK { Ok(()) } else { Err(rv) }
}

impl Backing {
    /// Loads and initialises the backing module and finds its token.
    pub fn open(config: &BackingConfig, control_dir: &Path) -> Rv<Backing> {
        let backing = Backing {
            functions: load(&config.module)?,
            slot: 0,
            away_file: control_dir.join(format!("{}.away", config.name)),
        };
        backing.initialize(config)?;
        let slot = backing.find_slot(&config.token);
        match slot {
            Ok(slot) => Ok(Backing { slot, ..backing }),
            Err(rv) => {
                backing.finalize();
                Err(rv)
            }
        }
    }

    fn initialize(&self, config: &BackingConfig) -> Rv<()> {
        let saved: Vec<(&String, Option<OsString>)> = config
            .env
            .keys()
            .map(|name| (name, std::env::var_os(name)))
            .collect();
        for (name, value) in &config.env {
            set_env(name, Some(value.as_ref()));
        }
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        let result = call!(
            self,
            C_Initialize(&mut args as *mut CK_C_INITIALIZE_ARGS as *mut c_void)
        );
        for (name, value) in saved {
            set_env(name, value.as_deref());
        }
        match result {
            Err(CKR_CRYPTOKI_ALREADY_INITIALIZED) => Ok(()),
            other => other,
        }
    }

    fn find_slot(&self, label: &str) -> Rv<CK_SLOT_ID> {
        let mut count: CK_ULONG = 0;
        call!(self, C_GetSlotList(CK_TRUE, ptr::null_mut(), &mut count))?;
        let mut slots = vec![0; count as usize];
        call!(self, C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut count))?;
        slots.truncate(count as usize);
        for slot in slots {
            let mut info = token_info_default();
            if call!(self, C_GetTokenInfo(slot, &mut info)).is_ok()
                && trimmed(&info.label) == label.as_bytes()
            {
                return Ok(slot);
            }
        }
        Err(CKR_TOKEN_NOT_PRESENT)
    }

    /// Finalizes the backing module (ending its sessions).
    pub fn finalize(&self) {
        let _ = call!(self, C_Finalize(ptr::null_mut()));
    }

    /// Whether the control file has taken this backing away.
    pub fn is_away(&self) -> bool {
        self.away_file.exists()
    }

    /// The backing token's information.
    pub fn token_info(&self, info: &mut CK_TOKEN_INFO) -> Rv<()> {
        call!(self, C_GetTokenInfo(self.slot, info))
    }

    /// Opens a session on the backing token.
    pub fn open_session(&self, flags: CK_FLAGS) -> Rv<CK_SESSION_HANDLE> {
        let mut session = 0;
        call!(
            self,
            C_OpenSession(self.slot, flags, ptr::null_mut(), None, &mut session)
        )?;
        Ok(session)
    }

    /// Closes a session.
    pub fn close_session(&self, session: CK_SESSION_HANDLE) -> Rv<()> {
        call!(self, C_CloseSession(session))
    }

    /// Logs the application in to the backing token.
    pub fn login(&self, session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Rv<()> {
        call!(
            self,
            C_Login(
                session,
                user,
                pin.as_ptr() as *mut u8,
                pin.len() as CK_ULONG
            )
        )
    }

    /// Logs the application out of the backing token.
    pub fn logout(&self, session: CK_SESSION_HANDLE) -> Rv<()> {
        call!(self, C_Logout(session))
    }

    /// Every object matching `template`.
    pub fn find(
        &self,
        session: CK_SESSION_HANDLE,
        template: &mut [CK_ATTRIBUTE],
    ) -> Rv<Vec<CK_OBJECT_HANDLE>> {
        call!(
            self,
            C_FindObjectsInit(session, template.as_mut_ptr(), template.len() as CK_ULONG)
        )?;
        let mut found = Vec::new();
        let result = loop {
            let mut batch = [0; 64];
            let mut count = 0;
            if let Err(rv) = call!(
                self,
                C_FindObjects(
                    session,
                    batch.as_mut_ptr(),
                    batch.len() as CK_ULONG,
                    &mut count
                )
            ) {
                break Err(rv);
            }
            found.extend_from_slice(&batch[..count as usize]);
            if (count as usize) < batch.len() {
                break Ok(());
            }
        };
        let finished = call!(self, C_FindObjectsFinal(session));
        result.and(finished).map(|()| found)
    }

    /// Reads attributes as `C_GetAttributeValue` does, into the caller's template.
    pub fn get_attributes(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: *mut CK_ATTRIBUTE,
        count: CK_ULONG,
    ) -> Rv<()> {
        call!(self, C_GetAttributeValue(session, object, template, count))
    }

    /// Reads one attribute's value (two calls: length, then bytes).
    pub fn attribute(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> Rv<Vec<u8>> {
        let mut attribute = CK_ATTRIBUTE {
            type_: kind,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        };
        self.get_attributes(session, object, &mut attribute, 1)?;
        let mut value = vec![0u8; attribute.ulValueLen as usize];
        attribute.pValue = value.as_mut_ptr() as *mut c_void;
        self.get_attributes(session, object, &mut attribute, 1)?;
        value.truncate(attribute.ulValueLen as usize);
        Ok(value)
    }

    /// Creates an object from `template`.
    pub fn create(
        &self,
        session: CK_SESSION_HANDLE,
        template: &mut [CK_ATTRIBUTE],
    ) -> Rv<CK_OBJECT_HANDLE> {
        let mut object = 0;
        call!(
            self,
            C_CreateObject(
                session,
                template.as_mut_ptr(),
                template.len() as CK_ULONG,
                &mut object
            )
        )?;
        Ok(object)
    }

    /// Destroys an object.
    pub fn destroy(&self, session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> Rv<()> {
        call!(self, C_DestroyObject(session, object))
    }

    /// Fills `buffer` from the backing token's generator.
    pub fn random(&self, session: CK_SESSION_HANDLE, buffer: &mut [u8]) -> Rv<()> {
        call!(
            self,
            C_GenerateRandom(session, buffer.as_mut_ptr(), buffer.len() as CK_ULONG)
        )
    }

    /// `C_EncryptInit` with the caller's mechanism.
    pub fn encrypt_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: *mut CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
    ) -> Rv<()> {
        call!(self, C_EncryptInit(session, mechanism, key))
    }

    /// `C_Encrypt` with the caller's buffers.
    pub fn encrypt(
        &self,
        session: CK_SESSION_HANDLE,
        data: *mut u8,
        data_len: CK_ULONG,
        out: *mut u8,
        out_len: *mut CK_ULONG,
    ) -> Rv<()> {
        call!(self, C_Encrypt(session, data, data_len, out, out_len))
    }

    /// `C_DecryptInit` with the caller's mechanism.
    pub fn decrypt_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: *mut CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
    ) -> Rv<()> {
        call!(self, C_DecryptInit(session, mechanism, key))
    }

    /// `C_Decrypt` with the caller's buffers.
    pub fn decrypt(
        &self,
        session: CK_SESSION_HANDLE,
        data: *mut u8,
        data_len: CK_ULONG,
        out: *mut u8,
        out_len: *mut CK_ULONG,
    ) -> Rv<()> {
        call!(self, C_Decrypt(session, data, data_len, out, out_len))
    }
}

/// A zeroed `CK_TOKEN_INFO` to be filled in.
pub fn token_info_default() -> CK_TOKEN_INFO {
    CK_TOKEN_INFO {
        label: [b' '; 32],
        manufacturerID: [b' '; 32],
        model: [b' '; 16],
        serialNumber: [b' '; 16],
        flags: 0,
        ulMaxSessionCount: 0,
        ulSessionCount: 0,
        ulMaxRwSessionCount: 0,
        ulRwSessionCount: 0,
        ulMaxPinLen: 0,
        ulMinPinLen: 0,
        ulTotalPublicMemory: 0,
        ulFreePublicMemory: 0,
        ulTotalPrivateMemory: 0,
        ulFreePrivateMemory: 0,
        hardwareVersion: CK_VERSION { major: 0, minor: 0 },
        firmwareVersion: CK_VERSION { major: 0, minor: 0 },
        utcTime: [b' '; 16],
    }
}

/// A blank-padded PKCS#11 string without its padding.
fn trimmed(padded: &[u8]) -> &[u8] {
    let end = padded
        .iter()
        .rposition(|byte| *byte != b' ')
        .map_or(0, |last| last + 1);
    &padded[..end]
}

/// Loads the module at `path` once per process and returns its function list.
fn load(path: &Path) -> Rv<&'static CK_FUNCTION_LIST> {
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, functions)) = loaded.iter().find(|(loaded, _)| loaded == path) {
        return Ok(functions);
    }
    // SAFETY: loading a PKCS#11 module runs its initialisers; SoftHSM2's are sound. The
    // library is leaked so that its function list stays valid for the life of the process.
    let library: &'static libloading::Library = unsafe { libloading::Library::new(path) }
        .map(|library| &*Box::leak(Box::new(library)))
        .map_err(|error| {
            eprintln!("pkcs11-vendor-sim: cannot load {}: {error}", path.display());
            CKR_GENERAL_ERROR
        })?;
    // SAFETY: C_GetFunctionList has this signature in every PKCS#11 module.
    let get_function_list = unsafe {
        library.get::<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV>(
            b"C_GetFunctionList\0",
        )
    }
    .map_err(|_| CKR_GENERAL_ERROR)?;
    let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
    // SAFETY: the module writes a pointer to its static function list.
    check(unsafe { get_function_list(&mut list) })?;
    // SAFETY: the list is static in the module, which is never unloaded.
    let functions = unsafe { list.as_ref() }.ok_or(CKR_GENERAL_ERROR)?;
    loaded.push((path.to_owned(), functions));
    Ok(functions)
}

fn set_env(name: &str, value: Option<&std::ffi::OsStr>) {
    // SAFETY: a test double's compromise, not hsm-kms's design (hsm-kms never changes its
    // environment once threads run): the module changes it only here, under its state lock,
    // around a backing's C_Initialize, which runs inside this module's own C_Initialize, so
    // under hsm-kms's initialise lock too. Test processes read no environment meanwhile.
    unsafe {
        match value {
            Some(value) => std::env::set_var(name, value),
            None => std::env::remove_var(name),
        }
    }
}
