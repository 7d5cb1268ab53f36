//! The simulated vendor cluster behind the one slot: sessions that span every backing token,
//! object handles that name a key on all of them (by class and `CKA_ID`), routing of each
//! call to a backing token that is not away, and the synchronisation of key creation and
//! destruction across all backing tokens.
//!
//! Synchronisation: `C_GenerateKey` draws the key value from a backing token's generator into
//! zeroized memory of this module and imports it with `C_CreateObject` and the caller's
//! template into every backing token, then wipes it; it is never stored, logged or returned.
//! That is the one place key material is in the clear outside a token, and the reason this
//! module is a test fixture only. To keep every key on every backing token, key creation and
//! destruction are refused with `CKR_TOKEN_WRITE_PROTECTED` while any backing token is away (a
//! real cluster would restore a replaced HSM from a backup instead); the slot itself stays up.

use std::collections::HashMap;
use std::ffi::c_void;

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::backing::{Backing, Rv};
use crate::config::Config;

/// The IV length the module writes into AES-GCM parameters, as CloudHSM does.
pub const GCM_IV_LEN: usize = 12;

/// What names one key across the backing tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    class: CK_OBJECT_CLASS,
    id: Vec<u8>,
}

/// One session of the module: a session on every backing token.
struct Session {
    /// The session on each backing token, by backing index.
    backing: Vec<CK_SESSION_HANDLE>,
    /// Matches of the search in progress not yet handed out, last first.
    found: Option<Vec<CK_OBJECT_HANDLE>>,
    /// The backing token running this session's encryption, if one is in progress.
    encrypting: Option<usize>,
    /// The backing token running this session's decryption, if one is in progress.
    decrypting: Option<usize>,
}

/// The initialised module.
pub struct Cluster {
    token_label: String,
    backings: Vec<Backing>,
    sessions: HashMap<CK_SESSION_HANDLE, Session>,
    objects: HashMap<CK_OBJECT_HANDLE, Identity>,
    handles: HashMap<Identity, CK_OBJECT_HANDLE>,
    /// (backing index, module handle) -> the backing token's handle.
    resolved: HashMap<(usize, CK_OBJECT_HANDLE), CK_OBJECT_HANDLE>,
    next_handle: CK_ULONG,
    next_backing: usize,
}

impl Cluster {
    /// Opens every backing token named in the configuration.
    pub fn open(config: &Config) -> Rv<Cluster> {
        let mut backings: Vec<Backing> = Vec::new();
        for backing in &config.backing {
            match Backing::open(backing, &config.control_dir) {
                Ok(opened) => backings.push(opened),
                Err(rv) => {
                    backings.iter().for_each(Backing::finalize);
                    return Err(rv);
                }
            }
        }
        Ok(Cluster {
            token_label: config.token_label.clone(),
            backings,
            sessions: HashMap::new(),
            objects: HashMap::new(),
            handles: HashMap::new(),
            resolved: HashMap::new(),
            next_handle: 1,
            next_backing: 0,
        })
    }

    /// Finalizes every backing token.
    pub fn finalize(self) {
        self.backings.iter().for_each(Backing::finalize);
    }

    fn handle(&mut self) -> CK_ULONG {
        self.next_handle += 1;
        self.next_handle
    }

    /// The indexes of backing tokens not away, starting round-robin.
    ///
    /// Presence is read one control file at a time, so a hand-over (one backing comes back,
    /// then another goes away) between two reads can show every backing away although one
    /// was there throughout; when a pass finds none, a second pass looks again.
    fn live(&mut self) -> Vec<usize> {
        let count = self.backings.len();
        self.next_backing = (self.next_backing + 1) % count;
        let start = self.next_backing;
        let present = |backings: &[Backing]| -> Vec<usize> {
            (0..count)
                .map(|offset| (start + offset) % count)
                .filter(|&index| !backings[index].is_away())
                .collect()
        };
        let first_pass = present(&self.backings);
        if first_pass.is_empty() {
            present(&self.backings)
        } else {
            first_pass
        }
    }

    /// The first backing token in configuration order that is there.
    fn first_present(&self) -> Rv<usize> {
        (0..self.backings.len())
            .find(|&index| !self.backings[index].is_away())
            .ok_or(CKR_DEVICE_ERROR)
    }

    /// Whether the token is present: some backing token is there.
    pub fn token_present(&self) -> bool {
        self.first_present().is_ok()
    }

    /// Refuses key writes unless every backing token is there to receive them.
    fn all_present(&self) -> Rv<()> {
        if self.backings.iter().any(Backing::is_away) {
            Err(CKR_TOKEN_WRITE_PROTECTED)
        } else {
            Ok(())
        }
    }

    fn session(&mut self, session: CK_SESSION_HANDLE) -> Rv<&mut Session> {
        self.sessions
            .get_mut(&session)
            .ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    fn backing_session(
        &mut self,
        session: CK_SESSION_HANDLE,
        backing: usize,
    ) -> Rv<CK_SESSION_HANDLE> {
        Ok(self.session(session)?.backing[backing])
    }

    /// The token information of the first backing token that is there, under the module's
    /// label.
    pub fn token_info(&mut self, info: &mut CK_TOKEN_INFO) -> Rv<()> {
        let backing = self.first_present()?;
        self.backings[backing].token_info(info)?;
        info.label = [b' '; 32];
        let label = self.token_label.as_bytes();
        let length = label.len().min(info.label.len());
        info.label[..length].copy_from_slice(&label[..length]);
        Ok(())
    }

    /// Opens a session on every backing token.
    pub fn open_session(&mut self, flags: CK_FLAGS) -> Rv<CK_SESSION_HANDLE> {
        let mut opened = Vec::with_capacity(self.backings.len());
        for backing in &self.backings {
            match backing.open_session(flags) {
                Ok(session) => opened.push(session),
                Err(rv) => {
                    for (backing, session) in self.backings.iter().zip(opened) {
                        let _ = backing.close_session(session);
                    }
                    return Err(rv);
                }
            }
        }
        let handle = self.handle();
        self.sessions.insert(
            handle,
            Session {
                backing: opened,
                found: None,
                encrypting: None,
                decrypting: None,
            },
        );
        Ok(handle)
    }

    /// Closes a session on every backing token.
    pub fn close_session(&mut self, session: CK_SESSION_HANDLE) -> Rv<()> {
        let closed = self
            .sessions
            .remove(&session)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        for (backing, session) in self.backings.iter().zip(closed.backing) {
            let _ = backing.close_session(session);
        }
        Ok(())
    }

    /// Closes every session.
    pub fn close_all_sessions(&mut self) {
        let sessions: Vec<_> = self.sessions.keys().copied().collect();
        for session in sessions {
            let _ = self.close_session(session);
        }
    }

    /// Logs in to every backing token (the cluster's users are the same on every HSM).
    pub fn login(&mut self, session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Rv<()> {
        let sessions = self.session(session)?.backing.clone();
        let results: Vec<Rv<()>> = self
            .backings
            .iter()
            .zip(sessions)
            .map(|(backing, session)| backing.login(session, user, pin))
            .collect();
        if let Some(Err(rv)) = results
            .iter()
            .find(|result| !matches!(result, Ok(()) | Err(CKR_USER_ALREADY_LOGGED_IN)))
        {
            return Err(*rv);
        }
        if results
            .iter()
            .all(|result| result == &Err(CKR_USER_ALREADY_LOGGED_IN))
        {
            return Err(CKR_USER_ALREADY_LOGGED_IN);
        }
        Ok(())
    }

    /// Logs out of every backing token.
    pub fn logout(&mut self, session: CK_SESSION_HANDLE) -> Rv<()> {
        let sessions = self.session(session)?.backing.clone();
        let mut result = Ok(());
        for (backing, session) in self.backings.iter().zip(sessions) {
            result = result.and(backing.logout(session));
        }
        result
    }

    /// Searches one backing token that is there and keeps the matches for `find_next`.
    pub fn find_init(
        &mut self,
        session: CK_SESSION_HANDLE,
        template: &mut [CK_ATTRIBUTE],
    ) -> Rv<()> {
        if self.session(session)?.found.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let backing = *self.live().first().ok_or(CKR_DEVICE_ERROR)?;
        let backing_session = self.backing_session(session, backing)?;
        let found = self.backings[backing].find(backing_session, template)?;
        let mut handles = Vec::with_capacity(found.len());
        for object in found {
            let identity = Identity {
                class: ulong(&self.backings[backing].attribute(
                    backing_session,
                    object,
                    CKA_CLASS,
                )?)?,
                id: self.backings[backing].attribute(backing_session, object, CKA_ID)?,
            };
            let handle = self.handle_of(identity);
            self.resolved.insert((backing, handle), object);
            handles.push(handle);
        }
        handles.reverse();
        self.session(session)?.found = Some(handles);
        Ok(())
    }

    /// The next matches of the search in progress.
    pub fn find_next(
        &mut self,
        session: CK_SESSION_HANDLE,
        out: &mut [CK_OBJECT_HANDLE],
    ) -> Rv<usize> {
        let found = self
            .session(session)?
            .found
            .as_mut()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let mut count = 0;
        while count < out.len() {
            let Some(handle) = found.pop() else { break };
            out[count] = handle;
            count += 1;
        }
        Ok(count)
    }

    /// Ends the search in progress.
    pub fn find_final(&mut self, session: CK_SESSION_HANDLE) -> Rv<()> {
        self.session(session)?
            .found
            .take()
            .map(|_| ())
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)
    }

    fn handle_of(&mut self, identity: Identity) -> CK_OBJECT_HANDLE {
        if let Some(handle) = self.handles.get(&identity) {
            return *handle;
        }
        let handle = self.handle();
        self.handles.insert(identity.clone(), handle);
        self.objects.insert(handle, identity);
        handle
    }

    /// The handle of module object `object` on backing token `backing`.
    fn resolve(
        &mut self,
        session: CK_SESSION_HANDLE,
        backing: usize,
        object: CK_OBJECT_HANDLE,
    ) -> Rv<CK_OBJECT_HANDLE> {
        if let Some(resolved) = self.resolved.get(&(backing, object)) {
            return Ok(*resolved);
        }
        let identity = self
            .objects
            .get(&object)
            .ok_or(CKR_OBJECT_HANDLE_INVALID)?
            .clone();
        let backing_session = self.backing_session(session, backing)?;
        let mut class = identity.class;
        let mut id = identity.id.clone();
        let mut template = [
            attribute(
                CKA_CLASS,
                &mut class as *mut CK_ULONG as *mut c_void,
                size_of::<CK_ULONG>(),
            ),
            attribute(CKA_ID, id.as_mut_ptr() as *mut c_void, id.len()),
        ];
        match self.backings[backing]
            .find(backing_session, &mut template)?
            .as_slice()
        {
            [found] => {
                self.resolved.insert((backing, object), *found);
                Ok(*found)
            }
            [] => Err(CKR_OBJECT_HANDLE_INVALID),
            _ => Err(CKR_GENERAL_ERROR),
        }
    }

    /// A backing token that is there and holds `object`, round-robin.
    fn route(
        &mut self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Rv<(usize, CK_SESSION_HANDLE, CK_OBJECT_HANDLE)> {
        let mut last = CKR_DEVICE_ERROR;
        for backing in self.live() {
            match self.resolve(session, backing, object) {
                Ok(resolved) => {
                    return Ok((backing, self.backing_session(session, backing)?, resolved));
                }
                Err(rv) => last = rv,
            }
        }
        Err(last)
    }

    /// Reads attributes of `object` from a backing token that is there.
    pub fn get_attributes(
        &mut self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: *mut CK_ATTRIBUTE,
        count: CK_ULONG,
    ) -> Rv<()> {
        let (backing, backing_session, resolved) = self.route(session, object)?;
        self.backings[backing].get_attributes(backing_session, resolved, template, count)
    }

    /// Random bytes from a backing token that is there.
    pub fn random(&mut self, session: CK_SESSION_HANDLE, buffer: &mut [u8]) -> Rv<()> {
        let backing = *self.live().first().ok_or(CKR_DEVICE_ERROR)?;
        let backing_session = self.backing_session(session, backing)?;
        self.backings[backing].random(backing_session, buffer)
    }

    /// Generates an AES key on every backing token from one value (see the module doc).
    pub fn generate_key(
        &mut self,
        session: CK_SESSION_HANDLE,
        mechanism: &CK_MECHANISM,
        template: &[CK_ATTRIBUTE],
    ) -> Rv<CK_OBJECT_HANDLE> {
        if mechanism.mechanism != CKM_AES_KEY_GEN {
            return Err(CKR_MECHANISM_INVALID);
        }
        self.all_present()?;
        let mut length = None;
        let mut id = Vec::new();
        let mut import: Vec<CK_ATTRIBUTE> = Vec::with_capacity(template.len() + 1);
        for item in template {
            match item.type_ {
                CKA_VALUE => return Err(CKR_TEMPLATE_INCONSISTENT),
                CKA_VALUE_LEN => length = Some(ulong(value(item))?),
                CKA_ID => {
                    id = value(item).to_vec();
                    import.push(*item);
                }
                _ => import.push(*item),
            }
        }
        let length = match length {
            Some(length @ (16 | 24 | 32)) => length as usize,
            Some(_) => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
            None => return Err(CKR_TEMPLATE_INCOMPLETE),
        };
        let mut material = Zeroizing::new(vec![0u8; length]);
        self.random(session, &mut material)?;
        import.push(attribute(
            CKA_VALUE,
            material.as_mut_ptr() as *mut c_void,
            length,
        ));
        let mut created: Vec<(usize, CK_OBJECT_HANDLE)> = Vec::new();
        for backing in 0..self.backings.len() {
            let backing_session = self.backing_session(session, backing)?;
            match self.backings[backing].create(backing_session, &mut import) {
                Ok(object) => created.push((backing, object)),
                Err(rv) => {
                    for (backing, object) in created {
                        let backing_session = self.backing_session(session, backing)?;
                        let _ = self.backings[backing].destroy(backing_session, object);
                    }
                    return Err(rv);
                }
            }
        }
        let handle = self.handle_of(Identity {
            class: CKO_SECRET_KEY,
            id,
        });
        for (backing, object) in created {
            self.resolved.insert((backing, handle), object);
        }
        Ok(handle)
    }

    /// Destroys `object` on every backing token.
    pub fn destroy(&mut self, session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> Rv<()> {
        self.all_present()?;
        for backing in 0..self.backings.len() {
            let resolved = match self.resolve(session, backing, object) {
                Ok(resolved) => resolved,
                Err(CKR_OBJECT_HANDLE_INVALID) => continue,
                Err(rv) => return Err(rv),
            };
            let backing_session = self.backing_session(session, backing)?;
            self.backings[backing].destroy(backing_session, resolved)?;
            self.resolved.remove(&(backing, object));
        }
        if let Some(identity) = self.objects.remove(&object) {
            self.handles.remove(&identity);
        }
        Ok(())
    }

    /// Starts an encryption on a backing token that is there. For AES-GCM the module chooses
    /// the IV, as CloudHSM does, and writes it into the caller's `CK_GCM_PARAMS` IV buffer.
    pub fn encrypt_init(
        &mut self,
        session: CK_SESSION_HANDLE,
        mechanism: *mut CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
    ) -> Rv<()> {
        let (backing, backing_session, resolved) = self.route(session, key)?;
        // SAFETY: the entry point checked the mechanism pointer for null; it is the caller's.
        if unsafe { (*mechanism).mechanism } == CKM_AES_GCM {
            // SAFETY: as above.
            let iv = unsafe { gcm_iv(mechanism) }?;
            self.backings[backing].random(backing_session, iv)?;
        }
        self.backings[backing].encrypt_init(backing_session, mechanism, resolved)?;
        self.session(session)?.encrypting = Some(backing);
        Ok(())
    }

    /// Continues the encryption started by `encrypt_init` on the same backing token.
    pub fn encrypt(
        &mut self,
        session: CK_SESSION_HANDLE,
        data: *mut u8,
        data_len: CK_ULONG,
        out: *mut u8,
        out_len: *mut CK_ULONG,
    ) -> Rv<()> {
        let backing = self
            .session(session)?
            .encrypting
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let backing_session = self.backing_session(session, backing)?;
        let result = self.backings[backing].encrypt(backing_session, data, data_len, out, out_len);
        if ends_operation(&result, out) {
            self.session(session)?.encrypting = None;
        }
        result
    }

    /// Starts a decryption on a backing token that is there.
    pub fn decrypt_init(
        &mut self,
        session: CK_SESSION_HANDLE,
        mechanism: *mut CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
    ) -> Rv<()> {
        let (backing, backing_session, resolved) = self.route(session, key)?;
        self.backings[backing].decrypt_init(backing_session, mechanism, resolved)?;
        self.session(session)?.decrypting = Some(backing);
        Ok(())
    }

    /// Continues the decryption started by `decrypt_init` on the same backing token.
    pub fn decrypt(
        &mut self,
        session: CK_SESSION_HANDLE,
        data: *mut u8,
        data_len: CK_ULONG,
        out: *mut u8,
        out_len: *mut CK_ULONG,
    ) -> Rv<()> {
        let backing = self
            .session(session)?
            .decrypting
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let backing_session = self.backing_session(session, backing)?;
        let result = self.backings[backing].decrypt(backing_session, data, data_len, out, out_len);
        if ends_operation(&result, out) {
            self.session(session)?.decrypting = None;
        }
        result
    }
}

/// Whether a single-part call ended its operation (all but a length query or a short buffer).
fn ends_operation(result: &Rv<()>, out: *mut u8) -> bool {
    !matches!(result, Ok(()) if out.is_null()) && result != &Err(CKR_BUFFER_TOO_SMALL)
}

/// The caller's AES-GCM IV buffer, which must hold [`GCM_IV_LEN`] bytes.
///
/// # Safety
/// `mechanism` must point at a valid `CK_MECHANISM` whose parameters the caller owns for the
/// whole operation.
unsafe fn gcm_iv<'a>(mechanism: *const CK_MECHANISM) -> Rv<&'a mut [u8]> {
    // SAFETY: as the caller promises.
    let mechanism = unsafe { &*mechanism };
    if mechanism.pParameter.is_null()
        || mechanism.ulParameterLen as usize != size_of::<CK_GCM_PARAMS>()
    {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: pParameter points at a CK_GCM_PARAMS of the checked size.
    let params = unsafe { &*(mechanism.pParameter as *const CK_GCM_PARAMS) };
    if params.pIv.is_null() || params.ulIvLen as usize != GCM_IV_LEN {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: pIv points at ulIvLen writable bytes the caller owns for the whole operation.
    Ok(unsafe { std::slice::from_raw_parts_mut(params.pIv, GCM_IV_LEN) })
}

/// A `CK_ATTRIBUTE` over `length` bytes at `value`.
fn attribute(kind: CK_ATTRIBUTE_TYPE, value: *mut c_void, length: usize) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: value,
        ulValueLen: length as CK_ULONG,
    }
}

/// The bytes of a caller's attribute value.
fn value(attribute: &CK_ATTRIBUTE) -> &[u8] {
    if attribute.pValue.is_null() {
        return &[];
    }
    // SAFETY: a caller's template attribute points at ulValueLen readable bytes.
    unsafe {
        std::slice::from_raw_parts(attribute.pValue as *const u8, attribute.ulValueLen as usize)
    }
}

/// A `CK_ULONG` attribute value.
fn ulong(bytes: &[u8]) -> Rv<CK_ULONG> {
    let bytes: [u8; size_of::<CK_ULONG>()] =
        bytes.try_into().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    Ok(CK_ULONG::from_ne_bytes(bytes))
}
