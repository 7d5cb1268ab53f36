//! The audit trail: CloudTrail-shaped events for every call and background
//! action, the tamper-evident log they are appended to, and the alarms that
//! watch it — this module currently holds the filter patterns alarms and
//! queries use.

pub mod filter;
