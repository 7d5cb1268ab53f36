//! Keys, aliases and ARNs are per account and region: a caller sees and uses only the keys
//! of its own account in the region it signed for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestStore;
use hsm_kms::ids::Scope;
use hsm_kms::keystore::Caller;
use hsm_kms::keystore::api::*;
use secrecy::SecretSlice;

#[test]
fn accounts_and_regions_are_separate() {
    let ts = TestStore::new();
    let owner = &ts.caller;
    let other_account = Caller::local(&Scope::new("us-east-1", "444455556666").unwrap());
    let other_region = Caller::local(&Scope::new("eu-west-1", "111122223333").unwrap());

    let key = ts
        .store
        .create_key(owner, CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    ts.store
        .create_alias(
            owner,
            AliasRequest {
                alias_name: "alias/shared-name".into(),
                target_key_id: key.key_id.clone(),
            },
        )
        .unwrap();
    let blob = ts
        .store
        .encrypt(
            owner,
            EncryptRequest {
                key_id: key.key_id.clone(),
                plaintext: SecretSlice::from(b"mine".to_vec()),
                ..Default::default()
            },
        )
        .unwrap()
        .ciphertext_blob;

    for stranger in [&other_account, &other_region] {
        let listed = ts
            .store
            .list_keys(stranger, ListRequest::default())
            .unwrap();
        assert!(
            listed.keys.is_empty(),
            "{:?} sees another scope's keys",
            stranger.scope
        );
        let aliases = ts
            .store
            .list_aliases(stranger, ListAliasesRequest::default())
            .unwrap();
        assert!(aliases.aliases.is_empty());
        let described = ts.store.describe_key(
            stranger,
            KeyIdRequest {
                key_id: key.key_id.clone(),
                ..Default::default()
            },
        );
        assert_eq!(described.unwrap_err().code(), "NotFoundException");
        let by_alias = ts.store.describe_key(
            stranger,
            KeyIdRequest {
                key_id: "alias/shared-name".into(),
                ..Default::default()
            },
        );
        assert_eq!(by_alias.unwrap_err().code(), "NotFoundException");
        let decrypted = ts.store.decrypt(
            stranger,
            DecryptRequest {
                ciphertext_blob: blob.clone(),
                ..Default::default()
            },
        );
        assert_eq!(decrypted.unwrap_err().code(), "AccessDeniedException");
        let disabled = ts.store.disable_key(
            stranger,
            KeyIdRequest {
                key_id: key.key_id.clone(),
                ..Default::default()
            },
        );
        assert_eq!(disabled.unwrap_err().code(), "NotFoundException");
    }

    // The same alias name is free in another account, with its own key and ARN.
    let theirs = ts
        .store
        .create_key(&other_account, CreateKeyRequest::default())
        .unwrap()
        .key_metadata;
    assert_eq!(
        theirs.arn,
        format!("arn:aws:kms:us-east-1:444455556666:key/{}", theirs.key_id)
    );
    assert_eq!(theirs.aws_account_id, "444455556666");
    ts.store
        .create_alias(
            &other_account,
            AliasRequest {
                alias_name: "alias/shared-name".into(),
                target_key_id: theirs.key_id.clone(),
            },
        )
        .unwrap();
    let resolved = ts
        .store
        .describe_key(
            &other_account,
            KeyIdRequest {
                key_id: "alias/shared-name".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(resolved.key_metadata.key_id, theirs.key_id);
    let mine = ts
        .store
        .describe_key(
            owner,
            KeyIdRequest {
                key_id: "alias/shared-name".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(mine.key_metadata.key_id, key.key_id);
    assert_eq!(
        ts.store
            .list_keys(owner, ListRequest::default())
            .unwrap()
            .keys
            .len(),
        1
    );
}
