//! One writer per key material version at a time, within this process. Creating a version
//! (and replicating it), copying it onto a member that lacks it, and destroying it each hold
//! the version's [`WriteGuard`], so a catch-up can never copy a version that a creation is
//! writing to the same member (two objects with one `CKA_ID`), nor bring back one that is
//! being destroyed. Another process writing the same HSMs is not covered: hsm-kms runs one
//! serving process per cluster.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The material versions being written right now.
#[derive(Default)]
pub(super) struct MaterialWriters {
    writing: Mutex<HashSet<Vec<u8>>>,
    finished: Condvar,
}

/// Held while one material version is written; dropping it lets the next writer in.
pub(super) struct WriteGuard<'a> {
    writers: &'a MaterialWriters,
    id: Vec<u8>,
}

impl MaterialWriters {
    fn lock(&self) -> MutexGuard<'_, HashSet<Vec<u8>>> {
        self.writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until nobody else writes the material with `CKA_ID` `id`, then claims it.
    pub(super) fn claim(&self, id: &[u8]) -> WriteGuard<'_> {
        let mut writing = self.lock();
        while writing.contains(id) {
            writing = self
                .finished
                .wait(writing)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        writing.insert(id.to_vec());
        WriteGuard {
            writers: self,
            id: id.to_vec(),
        }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.writers.lock().remove(&self.id);
        self.writers.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_writer_per_material() {
        let writers = Arc::new(MaterialWriters::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (writers, inside, most) = (writers.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _guard = writers.claim(b"key/1");
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        // Another material is not held up by a claimed one.
        let _one = writers.claim(b"key/1");
        let _two = writers.claim(b"key/2");
    }
}
