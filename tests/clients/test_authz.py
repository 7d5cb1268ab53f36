"""Key policies and identity policies with boto3 against `hsm-kms serve`, signing as several
credentials of two accounts (conftest.USERS): the default key policy, a policy naming one
principal, explicit denies, condition keys, cross-account use through the key ARN, the
lockout safety check and malformed documents, answered as AWS KMS answers them."""

from __future__ import annotations

import json

import pytest

from conftest import ACCOUNT, OTHER_ACCOUNT, REGION, refused, user_arn

DEV = f"arn:aws:iam::{ACCOUNT}:user/hsm-kms-dev"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
LOCKOUT = "The new key policy will not allow you to update the key policy in the future."


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal, actions, condition=None) -> dict:
    statement = {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*"}
    if condition:
        statement["Condition"] = condition
    return statement


# The development credential (the `kms` fixture) keeps full control of the keys it makes.
ADMIN = allow(DEV, "kms:*")


def denied(name: str, action: str, key_arn: str, because: str) -> str:
    return f"User: {user_arn(name)} is not authorized to perform: {action} on resource: {key_arn} {because}"


def test_the_default_policy_lets_the_account_in_and_no_one_else(kms, kms_as):
    key = kms.create_key()["KeyMetadata"]
    text = kms.get_key_policy(KeyId=key["KeyId"])["Policy"]
    assert json.loads(text)["Statement"][0]["Sid"] == "Enable IAM User Permissions"
    assert json.loads(text)["Statement"][0]["Principal"] == {"AWS": ROOT}
    assert kms.list_key_policies(KeyId=key["KeyId"])["PolicyNames"] == ["default"]
    blob = kms_as("alice").encrypt(KeyId=key["KeyId"], Plaintext=b"hi")["CiphertextBlob"]
    assert kms_as("bob").decrypt(CiphertextBlob=blob)["Plaintext"] == b"hi"
    message = refused(lambda: kms_as("partner").encrypt(KeyId=key["Arn"], Plaintext=b"x"), "AccessDeniedException")
    assert message == denied(
        "partner", "kms:Encrypt", key["Arn"], "because no resource-based policy allows the kms:Encrypt action"
    )


def test_a_policy_naming_one_principal_refuses_another(kms, kms_as):
    text = policy(ADMIN, allow(user_arn("alice"), ["kms:Encrypt", "kms:Decrypt"]))
    key = kms.create_key(Policy=text)["KeyMetadata"]
    assert kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"] == text
    blob = kms_as("alice").encrypt(KeyId=key["KeyId"], Plaintext=b"hi")["CiphertextBlob"]
    message = refused(lambda: kms_as("bob").decrypt(CiphertextBlob=blob), "AccessDeniedException")
    assert message == denied("bob", "kms:Decrypt", key["Arn"], "because no resource-based policy allows the kms:Decrypt action")
    refused(lambda: kms_as("bob").describe_key(KeyId=key["KeyId"]), "AccessDeniedException")
    refused(lambda: kms_as("alice").schedule_key_deletion(KeyId=key["KeyId"]), "AccessDeniedException")
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_an_explicit_deny_beats_an_allow_in_either_policy(kms, kms_as):
    text = policy(
        allow(ROOT, "kms:*"),
        {"Effect": "Deny", "Principal": {"AWS": user_arn("bob")}, "Action": "kms:Decrypt", "Resource": "*"},
    )
    key = kms.create_key(Policy=text)["KeyMetadata"]
    blob = kms_as("bob").encrypt(KeyId=key["KeyId"], Plaintext=b"hi")["CiphertextBlob"]
    message = refused(lambda: kms_as("bob").decrypt(CiphertextBlob=blob), "AccessDeniedException")
    assert message == denied("bob", "kms:Decrypt", key["Arn"], "with an explicit deny in a resource-based policy")
    assert kms_as("alice").decrypt(CiphertextBlob=blob)["Plaintext"] == b"hi"
    # carol's identity policy allows Encrypt, Decrypt and DescribeKey only.
    message = refused(lambda: kms_as("carol").disable_key(KeyId=key["KeyId"]), "AccessDeniedException")
    assert message == denied(
        "carol", "kms:DisableKey", key["Arn"], "because no identity-based policy allows the kms:DisableKey action"
    )
    message = refused(lambda: kms_as("carol").create_key(), "AccessDeniedException")
    assert message == denied("carol", "kms:CreateKey", "*", "because no identity-based policy allows the kms:CreateKey action")


def test_condition_keys_allow_and_refuse(kms, kms_as):
    conditions = {
        "StringEquals": {
            "aws:PrincipalTag/team": "blue",
            "kms:ViaService": "gateway",
            "kms:CallerAccount": ACCOUNT,
            "kms:EncryptionContext:purpose": "backup",
            "kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "kms:KeySpec": "SYMMETRIC_DEFAULT",
            "kms:KeyUsage": "ENCRYPT_DECRYPT",
            "kms:KeyOrigin": "AWS_KMS",
            "aws:ResourceTag/stage": "prod",
        },
        "IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
        "Bool": {"aws:SecureTransport": "false"},
        "DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"},
        "ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/c*"},
    }
    text = policy(ADMIN, allow("*", "kms:Encrypt", conditions))
    key = kms.create_key(Policy=text, Tags=[{"TagKey": "stage", "TagValue": "prod"}])["KeyMetadata"]
    carol = kms_as("carol")
    carol.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"purpose": "backup"})
    for context in ({}, {"purpose": "other"}):
        refused(lambda: carol.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=context), "AccessDeniedException")
    # alice has no tags and no via service.
    refused(
        lambda: kms_as("alice").encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"purpose": "backup"}),
        "AccessDeniedException",
    )
    # aws:ResourceTag follows the key's tags.
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "stage", "TagValue": "test"}])
    refused(
        lambda: carol.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"purpose": "backup"}),
        "AccessDeniedException",
    )
    # kms:RequestAlias: only through the alias.
    aliased = kms.create_key(Policy=policy(ADMIN, allow(user_arn("alice"), "kms:Encrypt", {"StringEquals": {"kms:RequestAlias": "alias/authz-app"}})))["KeyMetadata"]
    kms.create_alias(AliasName="alias/authz-app", TargetKeyId=aliased["KeyId"])
    kms_as("alice").encrypt(KeyId="alias/authz-app", Plaintext=b"x")
    refused(lambda: kms_as("alice").encrypt(KeyId=aliased["KeyId"], Plaintext=b"x"), "AccessDeniedException")
    # kms:ScheduleKeyDeletionPendingWindowInDays.
    window = policy(
        allow(ROOT, ["kms:Describe*", "kms:Get*", "kms:List*", "kms:PutKeyPolicy", "kms:CancelKeyDeletion"]),
        allow(ROOT, "kms:ScheduleKeyDeletion", {"NumericGreaterThanEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": "20"}}),
    )
    doomed = kms.create_key(Policy=window)["KeyMetadata"]
    refused(lambda: kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7), "AccessDeniedException")
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=25)
    kms.cancel_key_deletion(KeyId=doomed["KeyId"])


def test_another_account_uses_a_key_through_its_arn_never_an_alias(kms, kms_as):
    text = policy(
        allow(ROOT, "kms:*"),
        allow(f"arn:aws:iam::{OTHER_ACCOUNT}:root", ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]),
    )
    key = kms.create_key(Policy=text)["KeyMetadata"]
    kms.create_alias(AliasName="alias/authz-shared", TargetKeyId=key["KeyId"])
    partner = kms_as("partner")
    blob = partner.encrypt(KeyId=key["Arn"], Plaintext=b"shared")["CiphertextBlob"]
    assert partner.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"
    data_key = partner.generate_data_key(KeyId=key["Arn"], KeySpec="AES_256")
    assert data_key["KeyId"] == key["Arn"]
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/authz-shared"
    for reference in (alias_arn, "alias/authz-shared", key["KeyId"]):
        refused(lambda: partner.encrypt(KeyId=reference, Plaintext=b"x"), "NotFoundException")
    # The other account's identity policies must allow it too: stranger has none.
    message = refused(lambda: kms_as("stranger").encrypt(KeyId=key["Arn"], Plaintext=b"x"), "AccessDeniedException")
    assert message == denied(
        "stranger", "kms:Encrypt", key["Arn"], "because no identity-based policy allows the kms:Encrypt action"
    )


def test_the_lockout_check_and_its_bypass(kms, kms_as):
    key = kms.create_key()["KeyMetadata"]
    locking = policy(allow(user_arn("alice"), "kms:*"))
    message = refused(lambda: kms.put_key_policy(KeyId=key["KeyId"], Policy=locking), "MalformedPolicyDocumentException")
    assert message == LOCKOUT
    refused(lambda: kms.create_key(Policy=locking), "MalformedPolicyDocumentException")
    kms.put_key_policy(KeyId=key["KeyId"], Policy=locking, BypassPolicyLockoutSafetyCheck=True)
    refused(lambda: kms.get_key_policy(KeyId=key["KeyId"]), "AccessDeniedException")
    assert kms_as("alice").get_key_policy(KeyId=key["KeyId"])["Policy"] == locking


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({"Version": "2001-01-01", "Statement": [allow(ROOT, "kms:*")]}),
        policy({"Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}),
        policy({"Effect": "Allow", "Principal": {"AWS": ROOT}, "Resource": "*"}),
        policy({"Effect": "Allow", "Action": "kms:*", "Resource": "*"}),
        policy(allow("bob", "kms:*")),
        policy(allow(ROOT, "kms:*", {"StringSortOf": {"kms:KeySpec": "x"}})),
    ],
)
def test_malformed_policies_are_refused_and_change_nothing(kms, text):
    key = kms.create_key()["KeyMetadata"]
    before = kms.get_key_policy(KeyId=key["KeyId"])["Policy"]
    refused(lambda: kms.put_key_policy(KeyId=key["KeyId"], Policy=text), "MalformedPolicyDocumentException")
    assert kms.get_key_policy(KeyId=key["KeyId"])["Policy"] == before


def test_grants_end_to_end(kms, kms_as):
    key = kms.create_key(Policy=policy(ADMIN))["KeyMetadata"]
    bob = kms_as("bob")
    message = refused(lambda: bob.encrypt(KeyId=key["KeyId"], Plaintext=b"x"), "AccessDeniedException")
    assert message == denied("bob", "kms:Encrypt", key["Arn"], "because no resource-based policy allows the kms:Encrypt action")
    created = kms.create_grant(
        KeyId=key["KeyId"],
        GranteePrincipal=user_arn("bob"),
        RetiringPrincipal=user_arn("alice"),
        Operations=["Encrypt", "Decrypt"],
        Constraints={"EncryptionContextSubset": {"purpose": "backup"}},
    )
    assert len(created["GrantId"]) == 64 and created["GrantToken"]
    blob = bob.encrypt(
        KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"purpose": "backup", "day": "1"}, GrantTokens=[created["GrantToken"]]
    )["CiphertextBlob"]
    assert bob.decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "backup", "day": "1"})["Plaintext"] == b"x"
    refused(lambda: bob.encrypt(KeyId=key["KeyId"], Plaintext=b"x"), "AccessDeniedException")
    refused(lambda: bob.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256", EncryptionContext={"purpose": "backup"}), "AccessDeniedException")
    refused(lambda: bob.encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=["not-a-token"]), "InvalidGrantTokenException")

    (entry,) = kms.list_grants(KeyId=key["KeyId"])["Grants"]
    assert entry["KeyId"] == key["Arn"] and entry["GrantId"] == created["GrantId"]
    assert entry["GranteePrincipal"] == user_arn("bob") and entry["RetiringPrincipal"] == user_arn("alice")
    assert entry["IssuingAccount"] == ROOT
    assert sorted(entry["Operations"]) == ["Decrypt", "Encrypt"]
    assert entry["Constraints"] == {"EncryptionContextSubset": {"purpose": "backup"}}
    retirable = kms_as("alice").list_retirable_grants(RetiringPrincipal=user_arn("alice"))["Grants"]
    assert [g["GrantId"] for g in retirable] == [created["GrantId"]]

    # Retiring: not bob (no RetireGrant in the grant), alice as retiring principal; DryRun first.
    refused(lambda: bob.retire_grant(GrantToken=created["GrantToken"]), "AccessDeniedException")
    refused(lambda: kms_as("alice").retire_grant(GrantToken=created["GrantToken"], DryRun=True), "DryRunOperationException")
    kms_as("alice").retire_grant(GrantToken=created["GrantToken"])
    assert kms.list_grants(KeyId=key["KeyId"])["Grants"] == []
    refused(lambda: bob.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"purpose": "backup"}), "AccessDeniedException")

    # Names make CreateGrant idempotent; RevokeGrant is the key policy's to allow.
    first = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=user_arn("bob"), Operations=["Encrypt"], Name="nightly")
    again = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=user_arn("bob"), Operations=["Encrypt"], Name="nightly")
    assert first["GrantId"] == again["GrantId"] and first["GrantToken"] != again["GrantToken"]
    refused(lambda: bob.revoke_grant(KeyId=key["KeyId"], GrantId=first["GrantId"]), "AccessDeniedException")
    kms.revoke_grant(KeyId=key["KeyId"], GrantId=first["GrantId"])
    refused(lambda: kms.revoke_grant(KeyId=key["KeyId"], GrantId=first["GrantId"]), "NotFoundException")
    refused(lambda: kms.revoke_grant(KeyId=key["KeyId"], GrantId="nope"), "InvalidGrantIdException")


def test_grant_pages_limits_and_validation(kms):
    key = kms.create_key()["KeyMetadata"]
    made = {
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=user_arn("bob"), Operations=["Encrypt"], Name=f"g{n}")["GrantId"]
        for n in range(5)
    }
    pages = kms.get_paginator("list_grants").paginate(KeyId=key["KeyId"], PaginationConfig={"PageSize": 2})
    seen = [g["GrantId"] for page in pages for g in page["Grants"]]
    assert sorted(seen) == sorted(made)
    refused(lambda: kms.list_grants(KeyId=key["KeyId"], Marker="bogus"), "InvalidMarkerException")
    message = refused(
        lambda: kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=user_arn("bob"), Operations=["Encrypt", "Sign"],
                                 Constraints={"EncryptionContextEquals": {"a": "b"}}),
        "ValidationException",
    )
    assert "Sign" in message
    refused(lambda: kms.create_grant(KeyId=key["KeyId"], GranteePrincipal="not a principal", Operations=["Encrypt"]), "ValidationException")
    refused(lambda: kms.create_grant(KeyId="alias/nope", GranteePrincipal=user_arn("bob"), Operations=["Encrypt"]), "NotFoundException")
    refused(lambda: kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=user_arn("bob"), Operations=["Encrypt"], DryRun=True), "DryRunOperationException")


def test_another_accounts_grantee_uses_the_key_arn_only(kms, kms_as):
    key = kms.create_key(Policy=policy(ADMIN))["KeyMetadata"]
    kms.create_alias(AliasName="alias/granted", TargetKeyId=key["KeyId"])
    stranger = kms_as("stranger")
    refused(lambda: stranger.encrypt(KeyId=key["Arn"], Plaintext=b"x"), "AccessDeniedException")
    grant = kms.create_grant(KeyId=key["Arn"], GranteePrincipal=user_arn("stranger"), Operations=["Encrypt", "Decrypt", "GenerateDataKey", "RetireGrant"])
    blob = stranger.encrypt(KeyId=key["Arn"], Plaintext=b"x")["CiphertextBlob"]
    assert stranger.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    assert len(stranger.generate_data_key(KeyId=key["Arn"], KeySpec="AES_256")["Plaintext"]) == 32
    refused(lambda: stranger.encrypt(KeyId="alias/granted", Plaintext=b"x"), "NotFoundException")
    refused(lambda: stranger.encrypt(KeyId=f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/granted", Plaintext=b"x"), "NotFoundException")
    stranger.retire_grant(KeyId=key["Arn"], GrantId=grant["GrantId"])
    refused(lambda: stranger.encrypt(KeyId=key["Arn"], Plaintext=b"x"), "AccessDeniedException")
