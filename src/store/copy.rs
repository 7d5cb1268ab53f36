//! Copying a whole metadata store into an empty one of another backend (`hsm-kms store
//! migrate`), and proving the copy: every record of every table, the audit trail with its
//! chain and sealed checkpoints included. It owns the copy order and the comparison; it
//! copies payloads byte for byte and never looks inside them. Revisions are not copied:
//! the destination numbers its own commits, and revisions are only ever compared with
//! revisions read from the same store.

use std::fmt;

use super::{Batch, MetadataStore, Precondition, StoreError, Table, pages};

/// Records copied per commit.
const PAGE: usize = 1000;

/// Why a copy stopped or does not match.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The destination already holds records; copying would merge two stores.
    #[error("the destination is not empty: table {table} holds {count} records")]
    NotEmpty {
        /// The first table found with records.
        table: Table,
        /// How many it holds.
        count: u64,
    },
    /// The copy differs from its source (the source changed meanwhile, or a write was lost).
    #[error("the copy differs from its source in table {table}: {what}")]
    Differs {
        /// The table that differs.
        table: Table,
        /// What differs (keys hex-encoded, never payloads).
        what: String,
    },
    /// Either store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many records each table holds in both stores after a verified copy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Records per table, in [`Table::ALL`] order.
    pub records: Vec<(Table, u64)>,
}

impl fmt::Display for CopyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, count) in &self.records {
            writeln!(f, "{table}: {count} records")?;
        }
        Ok(())
    }
}

/// Copies every record of `from` into the empty store `to`, then compares both, table by
/// table, key by key and payload by payload. `from` must not change meanwhile (stop the
/// instances using it); a change shows up as [`CopyError::Differs`].
pub fn copy_store(
    from: &dyn MetadataStore,
    to: &dyn MetadataStore,
) -> Result<CopyReport, CopyError> {
    for table in Table::ALL {
        let count = to.count(table)?;
        if count > 0 {
            return Err(CopyError::NotEmpty { table, count });
        }
    }
    for table in Table::ALL {
        for page in pages(from, table, b"").size(PAGE) {
            let mut batch = Batch::new();
            for (key, record) in page? {
                batch.expect(table, &key, Precondition::ExpectAbsent).put(
                    table,
                    &key,
                    record.payload,
                );
            }
            if let Err(conflict) = to.commit(batch)? {
                return Err(CopyError::Differs {
                    table,
                    what: format!("written meanwhile by someone else: {conflict}"),
                });
            }
        }
    }
    verify_copy(from, to)
}

/// Compares two stores record by record.
pub fn verify_copy(
    from: &dyn MetadataStore,
    to: &dyn MetadataStore,
) -> Result<CopyReport, CopyError> {
    let mut report = CopyReport::default();
    for table in Table::ALL {
        let (mut after_from, mut after_to): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        let mut count = 0u64;
        loop {
            let source = from.scan(table, b"", after_from.as_deref(), PAGE)?;
            let copy = to.scan(table, b"", after_to.as_deref(), PAGE)?;
            let differs = |what: String| CopyError::Differs { table, what };
            for (index, (key, record)) in source.iter().enumerate() {
                match copy.get(index) {
                    Some((copied_key, copied)) if copied_key == key => {
                        if copied.payload != record.payload {
                            return Err(differs(format!("record {} differs", hex::encode(key))));
                        }
                    }
                    Some((copied_key, _)) => {
                        return Err(differs(format!(
                            "record {} where {} was expected",
                            hex::encode(copied_key),
                            hex::encode(key)
                        )));
                    }
                    None => return Err(differs(format!("record {} is missing", hex::encode(key)))),
                }
            }
            if copy.len() > source.len() {
                let extra = &copy[source.len()].0;
                return Err(differs(format!("record {} is extra", hex::encode(extra))));
            }
            count += source.len() as u64;
            match source.last() {
                Some((last, _)) => {
                    after_from = Some(last.clone());
                    after_to = Some(last.clone());
                }
                None => break,
            }
        }
        report.records.push((table, count));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn put(store: &dyn MetadataStore, table: Table, key: &[u8], payload: &[u8]) {
        let mut batch = Batch::new();
        batch.put(table, key, payload.to_vec());
        store.commit(batch).unwrap().unwrap();
    }

    #[test]
    fn every_table_is_copied_and_verified_and_differences_are_named() {
        let (from, to) = (MemoryStore::new(), MemoryStore::new());
        for n in 0..2500u32 {
            put(
                &from,
                Table::Audit,
                &u64::from(n).to_be_bytes(),
                &n.to_le_bytes(),
            );
        }
        put(&from, Table::Keys, b"key-1", b"k");
        put(&from, Table::Aliases, b"alias/a", b"key-1");
        let report = copy_store(&from, &to).unwrap();
        assert_eq!(report.records[Table::Audit as usize], (Table::Audit, 2500));
        assert_eq!(report.records[Table::Keys as usize], (Table::Keys, 1));
        assert_eq!(report.records.iter().map(|(_, n)| n).sum::<u64>(), 2502);

        let again = copy_store(&from, &to).unwrap_err();
        assert_eq!(
            again.to_string(),
            "the destination is not empty: table keys holds 1 records"
        );

        put(&to, Table::Keys, b"key-1", b"changed");
        let error = verify_copy(&from, &to).unwrap_err().to_string();
        assert_eq!(
            error,
            "the copy differs from its source in table keys: record 6b65792d31 differs"
        );
        put(&to, Table::Keys, b"key-1", b"k");
        put(&to, Table::Aliases, b"alias/b", b"key-1");
        let error = verify_copy(&from, &to).unwrap_err().to_string();
        assert_eq!(
            error,
            "the copy differs from its source in table aliases: record 616c6961732f62 is extra"
        );
    }
}
