//! An API call's record in two steps: the calling thread *captures* the values of its
//! [`ApiCallEvent`] (plain bytes, length-prefixed, in the order the record lists them), and
//! the audit writer *renders* them as the record's JSON. The JSON (CloudTrail's field names,
//! escaping, the event time's text) is about a third of an audited call's own work
//! (docs/benchmarks.md); capturing is a copy of the values, about a fifth of it, so the rest
//! moves off the calling thread to the writer, which hashes and stores the JSON anyway.
//!
//! Capture and render are each other's mirror and live here together; the event's
//! [`AuditEvent::write_json`] is the two in a row, so the test that compares it with the derived
//! serialisation checks both. A rendered record is byte for byte the one written before this
//! split, so the chain's definition (docs/audit.md) is unchanged.

use std::cell::RefCell;

use serde_json::Value;

use super::{ApiCallEvent, EventId, resource};
use crate::audit::log::{AuditEvent, Captured};

impl AuditEvent for ApiCallEvent<'_> {
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let mut values = Vec::with_capacity(512);
        self.capture_values(&mut values)?;
        render(&values, out);
        Ok(())
    }

    fn capture(&self, out: &mut Vec<u8>) -> Result<Captured, serde_json::Error> {
        self.capture_values(out)?;
        Ok(Captured::Values(render))
    }
}

const STRING: u8 = 0;
const JSON: u8 = 1;
const GIVEN: u8 = 0;
const FRESH: u8 = 1;

impl ApiCallEvent<'_> {
    /// Appends the record's values to `out`, in the order [`render`] reads them. Only
    /// non-string request parameters and response elements (a few operations') are written
    /// as JSON here.
    fn capture_values(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let mut values = Capture(out);
        values.number(self.event_time.0);
        values.text(self.event_version);
        values.text(self.event_source);
        values.text(self.event_name);
        values.text(self.aws_region);
        values.event_id(&self.request_id);
        values.event_id(&self.event_id);
        values.text(self.event_type);
        values.flag(self.management_event);
        values.text(self.event_category);
        let identity = &self.user_identity;
        values.text(identity.kind);
        values.text(identity.principal_id);
        values.text(identity.arn);
        values.text(identity.account_id);
        values.text(self.source_ip_address);
        values.text(self.user_agent);
        values.optional(self.error_code);
        values.optional(self.error_message);
        values.count(self.request_parameters.0.len());
        for (name, value) in &self.request_parameters.0 {
            values.text(name);
            match value {
                Value::String(text) => {
                    values.0.push(STRING);
                    values.text(text);
                }
                other => {
                    values.0.push(JSON);
                    values.json(other)?;
                }
            }
        }
        values.flag(self.response_elements.is_some());
        if let Some(elements) = self.response_elements {
            values.json(elements)?;
        }
        values.flag(self.read_only);
        values.text(self.resources.account);
        values.count(self.resources.arns.len());
        for arn in self.resources.arns {
            values.text(arn);
        }
        values.text(self.recipient_account_id);
        let additional = &self.additional_event_data;
        values.text(additional.cluster);
        values.flag(additional.hsm_members.is_some());
        if let Some(members) = additional.hsm_members {
            values.count(members.len());
            for member in members {
                values.text(member);
            }
        }
        values.optional(additional.hsm_kms_outcome);
        values.flag(self.shared_event_id.is_some());
        if let Some(shared) = &self.shared_event_id {
            values.0.extend_from_slice(shared.as_bytes());
        }
        Ok(())
    }
}

/// Writes the JSON of the record whose values [`ApiCallEvent::capture_values`] captured, as
/// CloudTrail lays it out: its field names and fixed values literal bytes, a caller's string
/// escaped only when it holds a character JSON needs escaped. Values cut short read as empty
/// (they cannot be: both sides are in this module and tested together).
fn render(captured: &[u8], out: &mut Vec<u8>) {
    let mut values = Values(captured);
    let time = values.number();
    verbatim_field(out, br#"{"eventVersion":"#, values.text());
    literal(out, br#","eventTime":"#);
    write_event_time(out, time);
    verbatim_field(out, br#","eventSource":"#, values.text());
    verbatim_field(out, br#","eventName":"#, values.text());
    string_field(out, br#","awsRegion":"#, values.text());
    literal(out, br#","requestID":"#);
    values.write_event_id(out);
    literal(out, br#","eventID":"#);
    values.write_event_id(out);
    verbatim_field(out, br#","eventType":"#, values.text());
    literal(out, br#","managementEvent":"#);
    boolean(out, values.flag());
    verbatim_field(out, br#","eventCategory":"#, values.text());
    verbatim_field(out, br#","userIdentity":{"type":"#, values.text());
    string_field(out, br#","principalId":"#, values.text());
    string_field(out, br#","arn":"#, values.text());
    string_field(out, br#","accountId":"#, values.text());
    string_field(out, br#"},"sourceIPAddress":"#, values.text());
    string_field(out, br#","userAgent":"#, values.text());
    if values.flag() {
        verbatim_field(out, br#","errorCode":"#, values.text());
    }
    if values.flag() {
        string_field(out, br#","errorMessage":"#, values.text());
    }
    literal(out, br#","requestParameters":{"#);
    for i in 0..values.count() {
        if i > 0 {
            out.push(b',');
        }
        verbatim_field(out, b"", values.text());
        out.push(b':');
        match values.byte() {
            STRING => json_string(out, values.text()),
            _ => literal(out, values.json()),
        }
    }
    literal(out, br#"},"responseElements":"#);
    if values.flag() {
        literal(out, values.json());
    } else {
        literal(out, b"null");
    }
    literal(out, br#","readOnly":"#);
    boolean(out, values.flag());
    literal(out, br#","resources":["#);
    let account = values.text();
    for i in 0..values.count() {
        let resource = resource(account, values.text());
        let open: &[u8] = if i == 0 {
            br#"{"accountId":"#
        } else {
            br#",{"accountId":"#
        };
        string_field(out, open, resource.account_id);
        verbatim_field(out, br#","type":"#, resource.kind);
        string_field(out, br#","ARN":"#, resource.arn);
        literal(out, b"}");
    }
    string_field(out, br#"],"recipientAccountId":"#, values.text());
    string_field(out, br#","additionalEventData":{"cluster":"#, values.text());
    if values.flag() {
        let members = values.count();
        for i in 0..members {
            let before: &[u8] = if i == 0 { br#","hsmMembers":["# } else { b"," };
            string_field(out, before, values.text());
        }
        literal(
            out,
            if members == 0 {
                br#","hsmMembers":[]"#
            } else {
                b"]"
            },
        );
    }
    if values.flag() {
        verbatim_field(out, br#","hsmKmsOutcome":"#, values.text());
    }
    literal(out, b"}");
    if values.flag() {
        literal(out, br#","sharedEventID":"#);
        json_uuid(out, &values.uuid());
    }
    literal(out, b"}");
    debug_assert!(values.0.is_empty(), "captured values left unread");
}

/// The capturing side: each value appended as it is, strings and JSON after their length.
struct Capture<'a>(&'a mut Vec<u8>);

impl Capture<'_> {
    fn number(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn count(&mut self, count: usize) {
        self.0.extend_from_slice(&count.to_le_bytes());
    }

    fn flag(&mut self, value: bool) {
        self.0.push(u8::from(value));
    }

    fn text(&mut self, text: &str) {
        self.count(text.len());
        self.0.extend_from_slice(text.as_bytes());
    }

    fn optional(&mut self, text: Option<&str>) {
        self.flag(text.is_some());
        if let Some(text) = text {
            self.text(text);
        }
    }

    fn event_id(&mut self, id: &EventId<'_>) {
        match id {
            EventId::Given(id) => {
                self.0.push(GIVEN);
                self.text(id);
            }
            EventId::Fresh(uuid) => {
                self.0.push(FRESH);
                self.0.extend_from_slice(uuid.as_bytes());
            }
        }
    }

    /// `value`'s JSON, after its length (written once it is known).
    fn json(&mut self, value: &Value) -> Result<(), serde_json::Error> {
        let at = self.0.len();
        self.count(0);
        serde_json::to_writer(&mut *self.0, value)?;
        let length = self.0.len() - at - size_of::<usize>();
        self.0[at..at + size_of::<usize>()].copy_from_slice(&length.to_le_bytes());
        Ok(())
    }
}

/// The rendering side: reads the values back in the order they were captured.
struct Values<'a>(&'a [u8]);

impl<'a> Values<'a> {
    fn take(&mut self, length: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(length.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or_default()
    }

    fn flag(&mut self) -> bool {
        self.byte() != 0
    }

    fn number(&mut self) -> i64 {
        i64::from_le_bytes(self.take(8).try_into().unwrap_or_default())
    }

    /// A length or a count; a count is bounded by the bytes left, as every element takes at
    /// least one.
    fn count(&mut self) -> usize {
        let count =
            usize::from_le_bytes(self.take(size_of::<usize>()).try_into().unwrap_or_default());
        count.min(self.0.len())
    }

    fn text(&mut self) -> &'a str {
        let length = self.count();
        std::str::from_utf8(self.take(length)).unwrap_or_default()
    }

    fn json(&mut self) -> &'a [u8] {
        let length = self.count();
        self.take(length)
    }

    fn uuid(&mut self) -> uuid::Uuid {
        uuid::Uuid::from_slice(self.take(16)).unwrap_or_default()
    }

    fn write_event_id(&mut self, out: &mut Vec<u8>) {
        match self.byte() {
            GIVEN => json_string(out, self.text()),
            _ => json_uuid(out, &self.uuid()),
        }
    }
}

fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

fn boolean(out: &mut Vec<u8>, value: bool) {
    literal(out, if value { b"true" } else { b"false" });
}

/// Writes CloudTrail's `eventTime` as a JSON string. Events come many to a second, so the
/// thread keeps the last second it formatted.
fn write_event_time(out: &mut Vec<u8>, time_millis: i64) {
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let second = time_millis.div_euclid(1000);
    LAST.with_borrow_mut(|(last_second, text)| {
        if *last_second != second {
            *text = super::event_time(time_millis);
            *last_second = second;
        }
        json_string(out, text);
    });
}

/// Writes `before` (the literal bytes up to a value, e.g. `,"awsRegion":`), then `value` as a
/// JSON string.
fn string_field(out: &mut Vec<u8>, before: &[u8], value: &str) {
    out.extend_from_slice(before);
    json_string(out, value);
}

/// Writes `before`, then `value` between quotes as it is: for the names the service chooses
/// (event names, types, error codes, parameter names), none of which needs escaping, so none
/// is scanned for characters that would.
fn verbatim_field(out: &mut Vec<u8>, before: &[u8], value: &str) {
    debug_assert!(
        !value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'),
        "{value:?} needs escaping"
    );
    out.extend_from_slice(before);
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// Writes `text` as a JSON string: as it is between quotes when no character in it needs
/// escaping (the usual case: names, ids, ARNs), escaped by serde_json otherwise.
fn json_string(out: &mut Vec<u8>, text: &str) {
    // Without a short cut, so that the compiler can check many bytes at once.
    let needs_escape = text.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        // Writing into a Vec cannot fail: its io::Write never returns an error.
        serde_json::to_writer(&mut *out, text).unwrap_or_default();
        return;
    }
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

fn json_uuid(out: &mut Vec<u8>, uuid: &uuid::Uuid) {
    out.push(b'"');
    out.extend_from_slice(
        uuid.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .as_bytes(),
    );
    out.push(b'"');
}
