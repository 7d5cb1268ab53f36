//! `audit verify`: walks the hash chain and the sealed checkpoints and names every event that
//! was edited, deleted, inserted or moved.
//!
//! What is detectable: any change to a stored event (its hash no longer matches), a deleted
//! event (a gap in the sequence), an event inserted or moved (its previous-hash link breaks),
//! a corrupt record, a chain rewritten from some point on when a sealed checkpoint covers
//! that point (the checkpoint's head hash no longer matches, and a checkpoint cannot be
//! re-sealed without the HSMs), and a tail cut off below a stored or exported checkpoint.
//! Deleting the newest events together with the head record and the checkpoints after them is
//! detectable only against a checkpoint exported earlier (`--checkpoint FILE`). Events the
//! service itself failed to write are recorded in the chain ([`EVENTS_LOST`] records) and
//! reported too. Not detectable: anything done by someone who holds the HSM user PIN and can
//! therefore seal new checkpoints over a rewritten chain. Without a [`Sealer`] no seal is
//! checked, and the report says so ([`VerifyReport::seals_verified`]).

use serde::Serialize;

use super::checkpoint::{Checkpoint, Sealer};
use super::event::EVENTS_LOST;
use super::log::{StoredEvent, chain_hash, read_head};
use crate::store::{MetadataStore, StoreError, Table};

/// One problem found in the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The sequence number where it was found.
    pub seq: u64,
    /// What is wrong, in one sentence.
    pub what: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Events read.
    pub events: u64,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Everything that does not verify; empty when the trail is intact.
    pub problems: Vec<Problem>,
    /// Whether checkpoint seals were checked against the HSMs (false without a sealer: then
    /// the checkpoints prove nothing, since anyone can write an unchecked one).
    pub seals_verified: bool,
}

impl VerifyReport {
    /// The first bad sequence number, if any.
    pub fn first_bad(&self) -> Option<u64> {
        self.problems.iter().map(|p| p.seq).min()
    }

    fn problem(&mut self, seq: u64, what: impl Into<String>) {
        self.problems.push(Problem {
            seq,
            what: what.into(),
        });
    }
}

/// Verifies the whole trail; `sealer` checks checkpoint seals, `exported` is a checkpoint
/// kept outside the store.
pub fn verify(
    store: &dyn MetadataStore,
    sealer: Option<&dyn Sealer>,
    exported: Option<&Checkpoint>,
) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport {
        seals_verified: sealer.is_some(),
        ..VerifyReport::default()
    };
    let mut walk = ChainWalk::default();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = match store.scan(Table::Audit, b"", after.as_deref(), 64) {
            Ok(page) => page,
            Err(StoreError::Corrupt { key, .. }) => {
                let seq = seq_of_hex(&key);
                walk.unreadable(&mut report, seq, format!("event {seq} is corrupt on disk"));
                after = Some(seq.to_be_bytes().to_vec());
                continue;
            }
            Err(other) => return Err(other),
        };
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, record) in page {
            let key_seq = key
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let Some(events) = StoredEvent::decode_record(&record.payload) else {
                walk.unreadable(
                    &mut report,
                    key_seq,
                    format!("event {key_seq} is unreadable"),
                );
                continue;
            };
            if events[0].seq != key_seq {
                report.problem(
                    key_seq,
                    format!(
                        "event {key_seq} holds the content of event {} (moved)",
                        events[0].seq
                    ),
                );
            }
            for event in &events {
                walk.event(&mut report, event);
            }
        }
    }
    let (previous_seq, hashes) = (walk.previous_seq, walk.hashes);

    let head = read_head(store)?;
    if head.seq > previous_seq {
        report.problem(
            previous_seq + 1,
            format!(
                "events {} to {} are missing from the end (truncated)",
                previous_seq + 1,
                head.seq
            ),
        );
    } else if head.seq < previous_seq {
        report.problem(
            head.seq + 1,
            format!("events after {} were appended outside the writer", head.seq),
        );
    }

    let checkpoints = store.scan(Table::AuditCheckpoints, b"", None, usize::MAX)?;
    for (_, record) in checkpoints {
        let Ok(checkpoint) = serde_json::from_slice::<Checkpoint>(&record.payload) else {
            report.problem(0, "a checkpoint record is unreadable");
            continue;
        };
        report.checkpoints += 1;
        check_checkpoint(
            &mut report,
            &hashes,
            previous_seq,
            &checkpoint,
            sealer,
            "checkpoint",
        );
    }
    if let Some(exported) = exported {
        check_checkpoint(
            &mut report,
            &hashes,
            previous_seq,
            exported,
            sealer,
            "the exported checkpoint",
        );
    }
    report.problems.sort_by_key(|p| p.seq);
    Ok(report)
}

/// The chain as walked so far, in stored order.
#[derive(Default)]
struct ChainWalk {
    /// The sequence number of the last event read.
    previous_seq: u64,
    previous_hash: [u8; 32],
    /// A record could not be read: the events it held are missing from the walk, and that is
    /// reported already.
    after_unreadable: bool,
    hashes: std::collections::BTreeMap<u64, [u8; 32]>,
}

impl ChainWalk {
    /// Checks one event against its own hash and the one read before it. An event's sequence
    /// number is covered by its hash, so the walk follows the numbers the events carry.
    fn event(&mut self, report: &mut VerifyReport, event: &StoredEvent) {
        report.events += 1;
        let seq = event.seq;
        let expected = self.previous_seq + 1;
        let follows = seq == expected && !self.after_unreadable;
        if seq > expected && !self.after_unreadable {
            report.problem(
                expected,
                format!("events {expected} to {} are missing (deleted)", seq - 1),
            );
        } else if seq < expected {
            report.problem(
                seq,
                format!(
                    "event {seq} is stored again after event {} (moved or copied)",
                    self.previous_seq
                ),
            );
        }
        if chain_hash(&event.previous, seq, &event.json) != event.hash {
            report.problem(seq, format!("event {seq} was edited"));
        } else if follows && event.previous != self.previous_hash {
            report.problem(
                seq,
                format!(
                    "event {seq} does not follow event {} (inserted, reordered or rewritten)",
                    self.previous_seq
                ),
            );
        }
        if let Some(lost) = events_lost(event) {
            report.problem(seq, lost);
        }
        self.hashes.insert(seq, event.hash);
        self.previous_seq = seq;
        self.previous_hash = event.hash;
        self.after_unreadable = false;
    }

    /// A record at `key_seq` that cannot be read: reported once, and the gap it leaves is not
    /// reported again as a deletion.
    fn unreadable(&mut self, report: &mut VerifyReport, key_seq: u64, what: String) {
        report.events += 1;
        report.problem(key_seq, what);
        self.previous_seq = self.previous_seq.max(key_seq);
        self.after_unreadable = true;
    }
}

/// The problem an [`EVENTS_LOST`] record stands for, if `event` is one.
fn events_lost(event: &StoredEvent) -> Option<String> {
    let marker = EVENTS_LOST.as_bytes();
    if !event.json.windows(marker.len()).any(|w| w == marker) {
        return None;
    }
    let record = event.event();
    if record["eventName"] != EVENTS_LOST {
        return None;
    }
    let details = &record["serviceEventDetails"];
    Some(format!(
        "event {} records {} event(s) from {} to {} that the service failed to write (lost: {})",
        event.seq,
        details["lostEvents"],
        details["firstEventTime"].as_str().unwrap_or("?"),
        details["lastEventTime"].as_str().unwrap_or("?"),
        details["reason"].as_str().unwrap_or("?"),
    ))
}

/// Checks one checkpoint's seal and that the chain, ending at `last_seq`, still holds the head
/// it sealed.
fn check_checkpoint(
    report: &mut VerifyReport,
    hashes: &std::collections::BTreeMap<u64, [u8; 32]>,
    last_seq: u64,
    checkpoint: &Checkpoint,
    sealer: Option<&dyn Sealer>,
    name: &str,
) {
    if let Some(sealer) = sealer
        && let Err(error) = checkpoint.verify(sealer)
    {
        report.problem(
            checkpoint.seq,
            format!("{name} at event {}: {error}", checkpoint.seq),
        );
        return;
    }
    match hashes.get(&checkpoint.seq) {
        Some(hash) if *hash == checkpoint.head_hash => {}
        Some(_) => report.problem(
            checkpoint.seq,
            format!(
                "{name} at event {} does not match the chain (rewritten)",
                checkpoint.seq
            ),
        ),
        None if checkpoint.seq > last_seq => report.problem(
            last_seq + 1,
            format!(
                "{name} covers events up to {}, the trail ends at {last_seq} (truncated)",
                checkpoint.seq
            ),
        ),
        // A missing event inside the trail is reported by the chain walk.
        None => {}
    }
}

fn seq_of_hex(key: &str) -> u64 {
    u64::from_str_radix(key, 16).unwrap_or(0)
}
