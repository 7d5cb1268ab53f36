//! Where the IVs hsm-kms proposes to the HSM for AES-GCM come from: operating-system randomness,
//! read [`IVS_PER_READ`] IVs at a time into a buffer of the calling thread.
//!
//! One `getrandom` call per Encrypt cost more than all the rest of the key store's own work on
//! the call (about a microsecond, most of it the kernel setting up its generator's state); one
//! per 64 IVs costs nothing measurable. The bytes are the same the kernel would have given one
//! call at a time, so each IV is as unpredictable and as unlikely to repeat (96 random bits).
//! IVs are published with their ciphertexts, so holding the next ones in memory reveals
//! nothing. A buffer belongs to the process that filled it: a forked child reads its own
//! rather than offer IVs its parent offers too, which under the same key would break GCM.

use std::cell::RefCell;

use super::error::Failure;
use super::gcm::IV_LEN;

/// IVs read from the operating system at once.
const IVS_PER_READ: usize = 64;

struct IvPool {
    bytes: [u8; IV_LEN * IVS_PER_READ],
    /// Offset of the next unused IV; `bytes.len()` when all are used.
    next: usize,
    /// The process that filled `bytes`.
    filled_by: u32,
}

thread_local! {
    static POOL: RefCell<IvPool> = const {
        RefCell::new(IvPool {
            bytes: [0; IV_LEN * IVS_PER_READ],
            next: IV_LEN * IVS_PER_READ,
            filled_by: 0,
        })
    };
}

/// A fresh random IV to offer the HSM; an HSM that chooses its own overwrites it.
pub(super) fn proposed_iv() -> Result<[u8; IV_LEN], Failure> {
    POOL.with_borrow_mut(|pool| {
        let process = std::process::id();
        if pool.next == pool.bytes.len() || pool.filled_by != process {
            getrandom::fill(&mut pool.bytes)
                .map_err(|e| Failure::Other(format!("no randomness for an IV: {e}")))?;
            pool.next = 0;
            pool.filled_by = process;
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&pool.bytes[pool.next..pool.next + IV_LEN]);
        pool.next += IV_LEN;
        Ok(iv)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ivs_do_not_repeat_across_refills_or_threads() {
        let draw = || {
            (0..3 * IVS_PER_READ + 1)
                .map(|_| proposed_iv().unwrap())
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(draw).join().unwrap();
        let mine = draw();
        let distinct: HashSet<_> = mine.iter().chain(&other).collect();
        assert_eq!(distinct.len(), mine.len() + other.len());
        assert!(mine.iter().all(|iv| iv != &[0; IV_LEN]));
    }
}
