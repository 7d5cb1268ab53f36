"""AWS managed keys (alias/aws/<service>) with boto3 against `hsm-kms serve`: made on first
use (once under concurrent first uses), listed as AWS lists them, usable only through their
service (credentials that declare `via_service`), rotated yearly, and every change refused
with AWS's exception and message.

The server is shared by the whole test session, so each test works on its own service's key
(the server serves the default `managed_key_services`)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from conftest import ACCOUNT, REGION, refused, user_arn

DEV = f"arn:aws:iam::{ACCOUNT}:user/hsm-kms-dev"


def alias_arn(name: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:{name}"


def no_policy_allows(principal: str, action: str, key_arn: str) -> str:
    return (
        f"User: {principal} is not authorized to perform: kms:{action} on resource: {key_arn} "
        f"because no resource-based policy allows the kms:{action} action"
    )


def listed(kms, name: str) -> dict:
    """The ListAliases entry of `name` (walking every page)."""
    for page in kms.get_paginator("list_aliases").paginate(PaginationConfig={"PageSize": 3}):
        for entry in page["Aliases"]:
            if entry["AliasName"] == name:
                return entry
    raise AssertionError(f"{name} is not listed")


def test_the_first_describe_makes_the_key_as_aws_describes_and_lists_it(kms):
    before = listed(kms, "alias/aws/lambda")
    assert before == {"AliasName": "alias/aws/lambda", "AliasArn": alias_arn("alias/aws/lambda")}

    key = kms.describe_key(KeyId="alias/aws/lambda")["KeyMetadata"]
    assert key["KeyManager"] == "AWS"
    assert key["Description"] == "Default key that protects my Lambda functions when no other key is defined"
    assert (key["KeyState"], key["KeySpec"], key["KeyUsage"], key["Origin"]) == (
        "Enabled",
        "SYMMETRIC_DEFAULT",
        "ENCRYPT_DECRYPT",
        "AWS_KMS",
    )
    assert kms.describe_key(KeyId=alias_arn("alias/aws/lambda"))["KeyMetadata"]["KeyId"] == key["KeyId"]

    after = listed(kms, "alias/aws/lambda")
    assert after["TargetKeyId"] == key["KeyId"]
    assert "CreationDate" in after and "LastUpdatedDate" in after
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=key["KeyId"])["Aliases"]] == ["alias/aws/lambda"]

    rotation = kms.get_key_rotation_status(KeyId=key["KeyId"])
    assert rotation["KeyRotationEnabled"] is True
    assert rotation["RotationPeriodInDays"] == 365

    policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    assert policy["Id"] == "auto-awslambda"
    through, direct = policy["Statement"]
    assert through["Sid"] == (
        "Allow access through AWS Lambda for all principals in the account that are authorized to use AWS Lambda"
    )
    assert through["Principal"] == {"AWS": "*"}
    assert through["Condition"] == {
        "StringEquals": {"kms:CallerAccount": ACCOUNT, "kms:ViaService": f"lambda.{REGION}.amazonaws.com"}
    }
    assert direct["Sid"] == "Allow direct access to key metadata to the account"
    assert direct["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    assert direct["Action"] == ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"]


def all_key_ids(kms) -> set[str]:
    return {entry["KeyId"] for page in kms.get_paginator("list_keys").paginate() for entry in page["Keys"]}


def test_eight_concurrent_first_uses_make_one_key(kms, kms_as):
    before = all_key_ids(kms)

    def first_use(_):
        return kms_as("alice").describe_key(KeyId="alias/aws/sqs")["KeyMetadata"]["KeyId"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(first_use, range(8)))
    assert len(ids) == 1, ids
    (key_id,) = ids
    assert all_key_ids(kms) - before == {key_id}
    assert listed(kms, "alias/aws/sqs")["TargetKeyId"] == key_id
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == (
        "Default key that protects my SQS messages when no other key is defined"
    )


def test_a_via_service_credential_uses_the_key_and_a_plain_one_only_describes_it(kms_as):
    gateway = kms_as("s3gateway")
    sealed = gateway.encrypt(KeyId="alias/aws/s3", Plaintext=b"object", EncryptionContext={"bucket": "b1"})
    key_arn = sealed["KeyId"]
    opened = gateway.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext={"bucket": "b1"})
    assert (opened["Plaintext"], opened["KeyId"]) == (b"object", key_arn)
    data_key = gateway.generate_data_key(KeyId="alias/aws/s3", KeySpec="AES_256")
    assert data_key["KeyId"] == key_arn
    assert gateway.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]

    for name in ["alice", "ebsgateway"]:
        client = kms_as(name)
        message = refused(lambda: client.encrypt(KeyId="alias/aws/s3", Plaintext=b"x"), "AccessDeniedException")
        assert message == no_policy_allows(user_arn(name), "Encrypt", key_arn)
        message = refused(
            lambda: client.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext={"bucket": "b1"}),
            "AccessDeniedException",
        )
        assert message == no_policy_allows(user_arn(name), "Decrypt", key_arn)
        assert client.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]["Arn"] == key_arn
        assert client.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"] is True

    # S3's managed key has no CreateGrant in its policy, EBS's has.
    message = refused(
        lambda: gateway.create_grant(KeyId=key_arn, GranteePrincipal=user_arn("bob"), Operations=["Decrypt"]),
        "AccessDeniedException",
    )
    assert message == no_policy_allows(user_arn("s3gateway"), "CreateGrant", key_arn)
    ebs = kms_as("ebsgateway")
    ebs_key = ebs.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    ebs.create_grant(KeyId=ebs_key["KeyId"], GranteePrincipal=user_arn("bob"), Operations=["Decrypt"])


def test_every_change_to_a_managed_key_is_refused_as_aws_refuses_it(kms):
    key = kms.describe_key(KeyId="alias/aws/dynamodb")["KeyMetadata"]
    key_id, key_arn = key["KeyId"], key["Arn"]
    mine = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/managed-test-mine", TargetKeyId=mine)
    default_policy = kms.get_key_policy(KeyId=mine, PolicyName="default")["Policy"]
    refusals = {
        "DisableKey": lambda: kms.disable_key(KeyId=key_id),
        "EnableKey": lambda: kms.enable_key(KeyId=key_id),
        "ScheduleKeyDeletion": lambda: kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7),
        "CancelKeyDeletion": lambda: kms.cancel_key_deletion(KeyId=key_id),
        "PutKeyPolicy": lambda: kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=default_policy),
        "TagResource": lambda: kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "team", "TagValue": "db"}]),
        "UntagResource": lambda: kms.untag_resource(KeyId=key_id, TagKeys=["team"]),
        "EnableKeyRotation": lambda: kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90),
        "DisableKeyRotation": lambda: kms.disable_key_rotation(KeyId=key_id),
        "RotateKeyOnDemand": lambda: kms.rotate_key_on_demand(KeyId=key_id),
        "UpdateKeyDescription": lambda: kms.update_key_description(KeyId=key_id, Description="mine now"),
        "CreateAlias": lambda: kms.create_alias(AliasName="alias/managed-test-ddb", TargetKeyId=key_id),
        "UpdateAlias": lambda: kms.update_alias(AliasName="alias/managed-test-mine", TargetKeyId=key_id),
    }
    for action, call in refusals.items():
        assert refused(call, "AccessDeniedException") == no_policy_allows(DEV, action, key_arn), action

    # The reserved names are not the caller's to create, re-point or delete.
    reserved = [
        lambda: kms.update_alias(AliasName="alias/aws/dynamodb", TargetKeyId=mine),
        lambda: kms.delete_alias(AliasName="alias/aws/dynamodb"),
        lambda: kms.create_alias(AliasName="alias/aws/dynamodb-copy", TargetKeyId=mine),
    ]
    for call in reserved:
        assert refused(call, "NotAuthorizedException") == ""

    after = kms.describe_key(KeyId="alias/aws/dynamodb")["KeyMetadata"]
    assert (after["KeyId"], after["KeyState"], after["Description"]) == (key_id, "Enabled", key["Description"])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == []
    assert kms.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 365
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=key_id)["Aliases"]] == ["alias/aws/dynamodb"]
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=mine)["Aliases"]] == ["alias/managed-test-mine"]


def test_an_alias_of_a_service_this_site_does_not_run_is_not_found(kms):
    message = refused(lambda: kms.describe_key(KeyId="alias/aws/kinesisvideo"), "NotFoundException")
    assert message == f"Alias {alias_arn('alias/aws/kinesisvideo')} is not found."
    names = [a["AliasName"] for page in kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]]
    assert "alias/aws/kinesisvideo" not in names
    assert {f"alias/aws/{s}" for s in ["s3", "ebs", "rds", "lambda", "secretsmanager", "sns", "sqs", "dynamodb"]} <= set(
        names
    )
