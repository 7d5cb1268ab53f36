//! Reading many records a page at a time. Work over every record under a prefix (all keys,
//! a key's grants, a table being copied) scans a bounded page, remembers the last key and
//! scans again after it; [`Pages`] is that loop, once, as an iterator of pages, so that the
//! work holds one page at a time and says only what it does with each.

use super::{MetadataStore, Record, StoreError, Table};

/// Records a page holds unless [`Pages::size`] says otherwise.
pub const PAGE: usize = 1000;

/// The pages of [`pages`]: each as [`MetadataStore::scan`] returns it, in key order, none
/// empty; after an error, nothing more.
pub struct Pages<'a> {
    store: &'a dyn MetadataStore,
    table: Table,
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    size: usize,
    finished: bool,
}

/// The records of `table` whose keys start with `prefix`, [`PAGE`] at a time.
pub fn pages<'a>(store: &'a dyn MetadataStore, table: Table, prefix: &[u8]) -> Pages<'a> {
    Pages {
        store,
        table,
        prefix: prefix.to_vec(),
        after: None,
        size: PAGE,
        finished: false,
    }
}

impl Pages<'_> {
    /// Only the records whose keys sort after `key` (when given).
    pub fn after(mut self, key: Option<Vec<u8>>) -> Self {
        self.after = key;
        self
    }

    /// Pages of at most `records` records (at least one).
    pub fn size(mut self, records: usize) -> Self {
        self.size = records.max(1);
        self
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<Vec<(Vec<u8>, Record)>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let page = self
            .store
            .scan(self.table, &self.prefix, self.after.as_deref(), self.size);
        match page {
            Ok(page) => match page.last() {
                Some((last, _)) => {
                    self.after = Some(last.clone());
                    Some(Ok(page))
                }
                None => {
                    self.finished = true;
                    None
                }
            },
            Err(error) => {
                self.finished = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, MemoryStore};

    #[test]
    fn every_record_under_the_prefix_comes_once_in_order_across_pages() {
        let store = MemoryStore::new();
        let mut batch = Batch::new();
        for i in 0..25u32 {
            batch.put(Table::Meta, format!("in/{i:03}").as_bytes(), vec![1]);
        }
        batch.put(Table::Meta, b"out/000", vec![1]);
        store.commit(batch).unwrap().unwrap();
        let keys = |pages: Pages<'_>| -> Vec<String> {
            pages
                .flat_map(|page| page.unwrap())
                .map(|(key, _)| String::from_utf8(key).unwrap())
                .collect()
        };
        let all: Vec<String> = (0..25).map(|i| format!("in/{i:03}")).collect();
        for size in [1, 7, 25, 1000] {
            assert_eq!(keys(pages(&store, Table::Meta, b"in/").size(size)), all);
        }
        let later = pages(&store, Table::Meta, b"in/")
            .after(Some(b"in/019".to_vec()))
            .size(4);
        assert_eq!(keys(later), all[20..]);
        assert_eq!(pages(&store, Table::Meta, b"none/").count(), 0);
    }
}
