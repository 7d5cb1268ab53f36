//! The catalogue of controls: each one's stable id, title, the external requirements it
//! answers and what it checks. Ids never change meaning once published (a harness keys off
//! them); a new check gets a new id. This module is data only: it decides nothing.

/// One control of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Stable identifier, e.g. `KMS-HSM-1`; never reused for another check.
    pub id: &'static str,
    /// What the control asserts, in one line.
    pub title: &'static str,
    /// The external requirements it answers (standard and clause).
    pub references: &'static [&'static str],
    /// What it checks and from which primary evidence.
    pub description: &'static str,
}

/// `KMS-HSM-1`: Key material is generated and kept inside HSMs only.
pub const HSM_ONLY: Control = Control {
    id: "KMS-HSM-1",
    title: "Key material is generated and kept inside HSMs only",
    references: &[
        "PCI DSS v4.0 3.6.1, 3.7.1, 3.7.3",
        "NIST SP 800-57 Part 1 Rev. 5 §6.2.2",
        "FIPS 140-3 (keys remain in the cryptographic boundary)",
    ],
    description: "For every key material version, on every member that must hold it: the \
        object exists (exactly once), CKA_SENSITIVE is true, CKA_EXTRACTABLE is false or the \
        object is extractable only under a trusted key (CKA_WRAP_WITH_TRUSTED), at least one \
        copy was generated inside an HSM (CKA_ALWAYS_SENSITIVE; CKA_NEVER_EXTRACTABLE too \
        for non-extractable keys), and the key check value is equal on every member. All \
        values are read back through PKCS#11.",
};

/// `KMS-HSM-2`: Key material is redundant across HSMs and zones.
pub const REDUNDANCY: Control = Control {
    id: "KMS-HSM-2",
    title: "Key material is redundant across HSMs and zones",
    references: &[
        "PCI DSS v4.0 3.7.3",
        "NIST SP 800-57 Part 1 Rev. 5 §8.2.2.2 (backup of keying material)",
        "AWS CloudHSM key store: two HSMs in different Availability Zones",
    ],
    description: "Every key material version is held by at least two members in at least two \
        zones (objects found on the members), the cluster's quorum holds, and members that \
        are down are named with the time they went down (from the audit trail).",
};

/// `KMS-ROT-1`: Customer managed symmetric keys rotate automatically.
pub const ROTATION: Control = Control {
    id: "KMS-ROT-1",
    title: "Customer managed symmetric keys rotate automatically",
    references: &[
        "AWS Config cmk-backing-key-rotation-enabled",
        "AWS Security Hub KMS.4",
        "PCI DSS v4.0 3.6.1, 3.7.4",
        "NIST SP 800-57 Part 1 Rev. 5 §5.3 (cryptoperiods)",
    ],
    description: "Every enabled customer managed symmetric key has automatic rotation on, and \
        its newest material version is younger than its rotation period (plus the configured \
        grace), from the key records in the metadata store.",
};

/// `KMS-DEL-1`: Key deletion waits and is alarmed.
pub const DELETION: Control = Control {
    id: "KMS-DEL-1",
    title: "Key deletion waits and is alarmed",
    references: &[
        "AWS Security Hub KMS.3",
        "AWS Config kms-cmk-not-scheduled-for-deletion",
        "PCI DSS v4.0 3.7.5",
        "NIST SP 800-57 Part 1 Rev. 5 §8.3.4",
    ],
    description: "Keys pending deletion are reported as findings (WARN); each must have a \
        waiting period of 7 to 30 days and an alarm that fired on its ScheduleKeyDeletion \
        event (the alarm's delivery cursor in the store passed that event's sequence number).",
};

/// `KMS-ACC-1`: No key policy opens decryption to everyone.
pub const KEY_POLICIES: Control = Control {
    id: "KMS-ACC-1",
    title: "No key policy opens decryption to everyone",
    references: &[
        "AWS Security Hub KMS.5 (keys not publicly accessible)",
        "AWS Security Hub KMS.1/KMS.2 (applied to key policies)",
        "PCI DSS v4.0 3.6.1.2, 7.2",
    ],
    description: "No Allow statement of a key policy gives kms:*, kms:Decrypt or \
        kms:ReEncrypt* to Principal \"*\" (or through NotPrincipal) without a condition that \
        narrows the caller (account, ARN, organisation, source, VPC, via service, tags).",
};

/// `KMS-ACC-2`: Credentials have identity policies that do not decrypt with every key.
pub const IDENTITY_POLICIES: Control = Control {
    id: "KMS-ACC-2",
    title: "Credentials have identity policies that do not decrypt with every key",
    references: &[
        "AWS Security Hub KMS.1 (customer managed IAM policies)",
        "AWS Security Hub KMS.2 (inline IAM policies)",
        "AWS Config iam-customer-policy-blocked-kms-actions",
        "AWS Config iam-inline-policy-blocked-kms-actions",
    ],
    description: "Every [[credentials]] entry has identity policies (without them it is \
        allowed by identity in its whole account), and none allows kms:*, kms:Decrypt or \
        kms:ReEncrypt* on every key (Resource \"*\") without a narrowing condition.",
};

/// `KMS-ACC-3`: No grant is older than the configured age.
pub const GRANTS: Control = Control {
    id: "KMS-ACC-3",
    title: "No grant is older than the configured age",
    references: &["PCI DSS v4.0 7.2.4 (review of access)", "AWS KMS grants"],
    description: "Every grant (grant id, key id, creation time) is younger than \
        [compliance] grant_max_age_days.",
};

/// `KMS-AUD-1`: The audit trail verifies end to end, without gaps.
pub const AUDIT_CHAIN: Control = Control {
    id: "KMS-AUD-1",
    title: "The audit trail verifies end to end, without gaps",
    references: &[
        "PCI DSS v4.0 10.2.1, 10.3.4, 10.5.1",
        "NIST SP 800-57 Part 2 Rev. 1 §6.5",
    ],
    description: "Every event's hash and link verify from the first event to the head, every \
        sealed checkpoint's seal opens inside the HSMs and matches the chain, and no event \
        records lost events (AuditEventsLost).",
};

/// `KMS-AUD-2`: Sealed checkpoints are no further apart than configured.
pub const CHECKPOINTS: Control = Control {
    id: "KMS-AUD-2",
    title: "Sealed checkpoints are no further apart than configured",
    references: &["PCI DSS v4.0 10.3.4"],
    description: "Consecutive sealed checkpoints cover at most the configured number of \
        events, no event waited longer than the configured gap for the checkpoint sealing it, \
        and no event at the head has waited longer than that unsealed.",
};

/// `KMS-AUD-3`: The built-in alarms are configured and deliver within their lag.
pub const ALARMS: Control = Control {
    id: "KMS-AUD-3",
    title: "The built-in alarms are configured and deliver within their lag",
    references: &["PCI DSS v4.0 10.4.1, 10.7.2"],
    description: "The built-in alarms (unusable-key-used, key-disabled-or-deletion-scheduled) \
        are configured, and every configured alarm's delivery cursor in the store is at the \
        head of the trail or behind it by events younger than the configured lag.",
};

/// `KMS-PLT-1`: Every non-loopback listener uses TLS.
pub const TLS: Control = Control {
    id: "KMS-PLT-1",
    title: "Every non-loopback listener uses TLS",
    references: &["PCI DSS v4.0 4.2.1", "NIST SP 800-52 Rev. 2"],
    description: "The configured listener is loopback, or has a TLS certificate and key \
        whose files exist (the key file owner-only).",
};

/// `KMS-PLT-2`: PIN and secret files are owner-only.
pub const SECRET_FILES: Control = Control {
    id: "KMS-PLT-2",
    title: "PIN and secret files are owner-only",
    references: &["PCI DSS v4.0 3.6.1.2, 8.3.2"],
    description: "Every file a PIN or secret is read from (member PINs, credential secrets, \
        shared-credentials files, the TLS key) exists, is owned by this process's user, and \
        gives no permission to group or others.",
};

/// `KMS-PLT-3`: Imported key material does not expire unnoticed.
pub const IMPORTED_MATERIAL: Control = Control {
    id: "KMS-PLT-3",
    title: "Imported key material does not expire unnoticed",
    references: &["AWS KMS ImportKeyMaterial ValidTo"],
    description: "Imported key material expiring within [compliance] \
        imported_expiry_warn_days is a WARN.",
};

/// Every control, in report order.
pub const ALL: [Control; 13] = [
    HSM_ONLY,
    REDUNDANCY,
    ROTATION,
    DELETION,
    KEY_POLICIES,
    IDENTITY_POLICIES,
    GRANTS,
    AUDIT_CHAIN,
    CHECKPOINTS,
    ALARMS,
    TLS,
    SECRET_FILES,
    IMPORTED_MATERIAL,
];

/// The control with `id` (case-insensitive).
pub fn find(id: &str) -> Option<&'static Control> {
    ALL.iter().find(|c| c.id.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_found() {
        for control in &ALL {
            assert_eq!(ALL.iter().filter(|c| c.id == control.id).count(), 1);
            assert_eq!(find(&control.id.to_lowercase()), Some(control));
            assert!(!control.references.is_empty(), "{}", control.id);
        }
        assert_eq!(find("KMS-NOPE-1"), None);
    }
}
