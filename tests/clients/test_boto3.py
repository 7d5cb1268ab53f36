"""boto3 against `hsm-kms serve`: every served operation, AWS's key-state table through the
wire, and every error arriving as the exception boto3 raises for AWS KMS."""

from __future__ import annotations

import datetime
import re
import uuid

import botocore.exceptions
import pytest

from conftest import ACCOUNT, REGION

ARN_RE = re.compile(rf"^arn:aws:kms:{REGION}:{ACCOUNT}:key/[0-9a-f-]{{36}}$")


def new_key(kms, **kwargs) -> dict:
    return kms.create_key(**kwargs)["KeyMetadata"]


def error_of(excinfo) -> tuple[str, str]:
    """(code, message) of a botocore ClientError."""
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


# --- Operations ---------------------------------------------------------------------------


def test_create_key_and_describe_it_by_every_name(kms):
    meta = new_key(kms, Description="client test", Tags=[{"TagKey": "team", "TagValue": "ops"}])
    assert ARN_RE.match(meta["Arn"])
    assert meta["Arn"].endswith("/" + meta["KeyId"])
    assert meta["AWSAccountId"] == ACCOUNT
    assert isinstance(meta["CreationDate"], datetime.datetime)
    assert meta["CreationDate"].tzinfo is not None
    assert meta["Enabled"] is True
    assert meta["KeyState"] == "Enabled"
    assert meta["Description"] == "client test"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["Origin"] == "AWS_KMS"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]

    alias = f"alias/describe-{meta['KeyId'][:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:{alias}"
    for name in (meta["KeyId"], meta["Arn"], alias, alias_arn):
        described = kms.describe_key(KeyId=name)["KeyMetadata"]
        assert described["Arn"] == meta["Arn"]
        assert described["KeyId"] == meta["KeyId"]
    assert kms.list_resource_tags(KeyId=meta["KeyId"])["Tags"] == [
        {"TagKey": "team", "TagValue": "ops"}
    ]


def test_list_keys_pages_through_every_key(kms):
    created = {new_key(kms)["KeyId"] for _ in range(3)}
    first = kms.list_keys(Limit=2)
    assert len(first["Keys"]) == 2
    assert first["Truncated"] is True
    assert first["NextMarker"]

    seen = []
    for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2}):
        assert len(page["Keys"]) <= 2
        seen.extend(page["Keys"])
    ids = [entry["KeyId"] for entry in seen]
    assert len(ids) == len(set(ids)), "a key listed twice across pages"
    assert created <= set(ids)
    for entry in seen:
        assert entry["KeyArn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{entry['KeyId']}"


def test_disable_and_enable_key(kms):
    key = new_key(kms)["KeyId"]
    assert kms.disable_key(KeyId=key)["ResponseMetadata"]["HTTPStatusCode"] == 200
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Disabled", False)
    kms.enable_key(KeyId=key)
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Enabled", True)


def test_schedule_and_cancel_key_deletion(kms, server):
    key = new_key(kms)
    scheduled = kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert scheduled["KeyId"] == key["Arn"]
    assert scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7
    assert isinstance(scheduled["DeletionDate"], datetime.datetime)
    days = (scheduled["DeletionDate"] - datetime.datetime.now(datetime.timezone.utc)).days
    assert 6 <= days <= 7
    meta = kms.describe_key(KeyId=key["Arn"])["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert meta["DeletionDate"] == scheduled["DeletionDate"]
    assert meta["PendingDeletionWindowInDays"] == 7

    cancelled = kms.cancel_key_deletion(KeyId=key["KeyId"])
    assert cancelled["KeyId"] == key["Arn"]
    meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert meta["KeyState"] == "Disabled"
    assert "DeletionDate" not in meta


def test_update_key_description(kms):
    key = new_key(kms, Description="before")["KeyId"]
    kms.update_key_description(KeyId=key, Description="after")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "after"


def test_tag_untag_and_list_resource_tags(kms):
    key = new_key(kms)["KeyId"]
    kms.tag_resource(
        KeyId=key,
        Tags=[
            {"TagKey": "b", "TagValue": "2"},
            {"TagKey": "a", "TagValue": "1"},
            {"TagKey": "c", "TagValue": "3"},
        ],
    )
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "a", "TagValue": "one"}])
    tags = []
    for page in kms.get_paginator("list_resource_tags").paginate(
        KeyId=key, PaginationConfig={"PageSize": 2}
    ):
        tags.extend(page["Tags"])
    assert sorted((t["TagKey"], t["TagValue"]) for t in tags) == [
        ("a", "one"),
        ("b", "2"),
        ("c", "3"),
    ]
    kms.untag_resource(KeyId=key, TagKeys=["a", "c"])
    assert kms.list_resource_tags(KeyId=key)["Tags"] == [{"TagKey": "b", "TagValue": "2"}]


def test_create_update_delete_and_list_aliases(kms):
    first = new_key(kms)
    second = new_key(kms)
    alias = f"alias/life-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=first["Arn"])

    listed = kms.list_aliases(KeyId=first["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in listed] == [alias]
    entry = listed[0]
    assert entry["AliasArn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:{alias}"
    assert entry["TargetKeyId"] == first["KeyId"]
    assert isinstance(entry["CreationDate"], datetime.datetime)

    kms.update_alias(AliasName=alias, TargetKeyId=second["KeyId"])
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == second["KeyId"]
    assert kms.list_aliases(KeyId=first["KeyId"])["Aliases"] == []

    every = []
    for page in kms.get_paginator("list_aliases").paginate(PaginationConfig={"PageSize": 1}):
        every.extend(a["AliasName"] for a in page["Aliases"])
    assert alias in every

    kms.delete_alias(AliasName=alias)
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId=alias)


def test_encrypt_and_decrypt_with_context(kms):
    key = new_key(kms)
    context = {"purpose": "backup", "tenant": "t-1"}
    encrypted = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"secret bytes \x00\xff", EncryptionContext=context)
    assert encrypted["KeyId"] == key["Arn"]
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = encrypted["CiphertextBlob"]
    assert isinstance(blob, bytes) and b"secret bytes" not in blob

    decrypted = kms.decrypt(CiphertextBlob=blob, EncryptionContext=dict(reversed(context.items())))
    assert decrypted["Plaintext"] == b"secret bytes \x00\xff"
    assert decrypted["KeyId"] == key["Arn"]
    assert decrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    with_key = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context, KeyId=key["Arn"])
    assert with_key["Plaintext"] == b"secret bytes \x00\xff"

    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "backup"})
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob)


def test_re_encrypt(kms):
    source = new_key(kms)
    destination = new_key(kms)
    blob = kms.encrypt(KeyId=source["KeyId"], Plaintext=b"move me", EncryptionContext={"a": "1"})[
        "CiphertextBlob"
    ]
    moved = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"a": "1"},
        DestinationKeyId=destination["KeyId"],
        DestinationEncryptionContext={"b": "2"},
    )
    assert moved["SourceKeyId"] == source["Arn"]
    assert moved["KeyId"] == destination["Arn"]
    assert moved["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert moved["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    back = kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"b": "2"})
    assert (back["Plaintext"], back["KeyId"]) == (b"move me", destination["Arn"])


def test_generate_data_key_and_without_plaintext(kms):
    key = new_key(kms)
    data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256", EncryptionContext={"f": "x"})
    assert data_key["KeyId"] == key["Arn"]
    assert len(data_key["Plaintext"]) == 32
    opened = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext={"f": "x"})
    assert opened["Plaintext"] == data_key["Plaintext"]

    assert len(kms.generate_data_key(KeyId=key["Arn"], KeySpec="AES_128")["Plaintext"]) == 16
    assert len(kms.generate_data_key(KeyId=key["Arn"], NumberOfBytes=64)["Plaintext"]) == 64

    sealed = kms.generate_data_key_without_plaintext(KeyId=key["KeyId"], KeySpec="AES_256")
    assert sealed["KeyId"] == key["Arn"]
    assert "Plaintext" not in sealed
    assert len(kms.decrypt(CiphertextBlob=sealed["CiphertextBlob"])["Plaintext"]) == 32


def test_generate_random(kms):
    first = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    second = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    assert len(first) == len(second) == 32
    assert first != second
    assert len(kms.generate_random(NumberOfBytes=1024)["Plaintext"]) == 1024


def test_rotation_enable_status_on_demand_list_and_disable(kms):
    key = new_key(kms)
    status = kms.get_key_rotation_status(KeyId=key["KeyId"])
    assert status["KeyRotationEnabled"] is False
    assert status["KeyId"] == key["Arn"]

    old_blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"before rotation")["CiphertextBlob"]
    kms.enable_key_rotation(KeyId=key["KeyId"], RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key["Arn"])
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 90
    assert isinstance(status["NextRotationDate"], datetime.datetime)

    rotated = kms.rotate_key_on_demand(KeyId=key["KeyId"])
    assert rotated["KeyId"] == key["Arn"]
    # The rotation finished within the call, so no on-demand rotation is in progress.
    assert "OnDemandRotationStartDate" not in kms.get_key_rotation_status(KeyId=key["KeyId"])

    rotations = kms.list_key_rotations(KeyId=key["KeyId"])["Rotations"]
    assert len(rotations) == 1
    assert rotations[0]["KeyId"] == key["Arn"]
    assert rotations[0]["RotationType"] == "ON_DEMAND"
    assert isinstance(rotations[0]["RotationDate"], datetime.datetime)

    assert kms.decrypt(CiphertextBlob=old_blob)["Plaintext"] == b"before rotation"
    new_blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"after rotation")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=new_blob)["Plaintext"] == b"after rotation"

    kms.disable_key_rotation(KeyId=key["KeyId"])
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is False


# --- The key-state table through the wire -------------------------------------------------

OK = None
DISABLED = ("DisabledException", "is disabled.")
PENDING = ("KMSInvalidStateException", "is pending deletion.")
NOT_PENDING = ("KMSInvalidStateException", "is not pending deletion.")
STATES = ("Enabled", "Disabled", "PendingDeletion")

# AWS's key-state table for the states a key reaches here: None for success, else the
# exception and the message after "<key ARN> ".
TABLE = {
    "Encrypt": (OK, DISABLED, PENDING),
    "Decrypt": (OK, DISABLED, PENDING),
    "ReEncryptSource": (OK, DISABLED, PENDING),
    "ReEncryptDestination": (OK, DISABLED, PENDING),
    "GenerateDataKey": (OK, DISABLED, PENDING),
    "GenerateDataKeyWithoutPlaintext": (OK, DISABLED, PENDING),
    "EnableKey": (OK, OK, PENDING),
    "DisableKey": (OK, OK, PENDING),
    "ScheduleKeyDeletion": (OK, OK, PENDING),
    "CancelKeyDeletion": (NOT_PENDING, NOT_PENDING, OK),
    "CreateAlias": (OK, OK, PENDING),
    "UpdateAliasDestination": (OK, OK, PENDING),
    "TagResource": (OK, OK, PENDING),
    "UntagResource": (OK, OK, PENDING),
    "UpdateKeyDescription": (OK, OK, PENDING),
    "EnableKeyRotation": (OK, DISABLED, PENDING),
    "DisableKeyRotation": (OK, DISABLED, PENDING),
    "GetKeyRotationStatus": (OK, OK, OK),
    "RotateKeyOnDemand": (OK, DISABLED, PENDING),
    "ListKeyRotations": (OK, OK, OK),
    "DescribeKey": (OK, OK, OK),
    "DeleteAlias": (OK, OK, OK),
    "ListAliases": (OK, OK, OK),
    "ListResourceTags": (OK, OK, OK),
}


@pytest.fixture(scope="module")
def partner(kms):
    """An Enabled key the state-table cells pair with (ReEncrypt, UpdateAlias)."""
    return new_key(kms, Description="state table partner")


def _cell(kms, partner, state):
    """A key with a ciphertext, an alias, a tag and rotation on, brought to `state`. (The
    partner gets an alias only for UpdateAlias: a key may have at most 50.)"""
    key = new_key(kms)
    key_id = key["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"cell", EncryptionContext={"cell": "x"})[
        "CiphertextBlob"
    ]
    suffix = uuid.uuid4().hex[:12]
    alias = f"alias/cell-{suffix}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "team", "TagValue": "red"}])
    kms.enable_key_rotation(KeyId=key_id)
    if state == "Disabled":
        kms.disable_key(KeyId=key_id)
    elif state == "PendingDeletion":
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == state
    return key, blob, alias, suffix


def _run(kms, op, key, blob, alias, partner, suffix):
    key_id = key["KeyId"]
    partner_alias = f"alias/partner-{suffix}"
    if op == "UpdateAliasDestination":
        kms.create_alias(AliasName=partner_alias, TargetKeyId=partner["KeyId"])
    partner_blob = kms.encrypt(KeyId=partner["KeyId"], Plaintext=b"partner")["CiphertextBlob"]
    calls = {
        "Encrypt": lambda: kms.encrypt(KeyId=key_id, Plaintext=b"more"),
        "Decrypt": lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext={"cell": "x"}),
        "ReEncryptSource": lambda: kms.re_encrypt(
            CiphertextBlob=blob,
            SourceEncryptionContext={"cell": "x"},
            DestinationKeyId=partner["KeyId"],
        ),
        "ReEncryptDestination": lambda: kms.re_encrypt(
            CiphertextBlob=partner_blob, DestinationKeyId=key_id
        ),
        "GenerateDataKey": lambda: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256"),
        "GenerateDataKeyWithoutPlaintext": lambda: kms.generate_data_key_without_plaintext(
            KeyId=key_id, KeySpec="AES_256"
        ),
        "EnableKey": lambda: kms.enable_key(KeyId=key_id),
        "DisableKey": lambda: kms.disable_key(KeyId=key_id),
        "ScheduleKeyDeletion": lambda: kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7),
        "CancelKeyDeletion": lambda: kms.cancel_key_deletion(KeyId=key_id),
        "CreateAlias": lambda: kms.create_alias(AliasName=f"alias/new-{suffix}", TargetKeyId=key_id),
        "UpdateAliasDestination": lambda: kms.update_alias(
            AliasName=partner_alias, TargetKeyId=key_id
        ),
        "TagResource": lambda: kms.tag_resource(
            KeyId=key_id, Tags=[{"TagKey": "more", "TagValue": "x"}]
        ),
        "UntagResource": lambda: kms.untag_resource(KeyId=key_id, TagKeys=["team"]),
        "UpdateKeyDescription": lambda: kms.update_key_description(KeyId=key_id, Description="d"),
        "EnableKeyRotation": lambda: kms.enable_key_rotation(KeyId=key_id),
        "DisableKeyRotation": lambda: kms.disable_key_rotation(KeyId=key_id),
        "GetKeyRotationStatus": lambda: kms.get_key_rotation_status(KeyId=key_id),
        "RotateKeyOnDemand": lambda: kms.rotate_key_on_demand(KeyId=key_id),
        "ListKeyRotations": lambda: kms.list_key_rotations(KeyId=key_id),
        "DescribeKey": lambda: kms.describe_key(KeyId=alias),
        "DeleteAlias": lambda: kms.delete_alias(AliasName=alias),
        "ListAliases": lambda: kms.list_aliases(KeyId=key_id),
        "ListResourceTags": lambda: kms.list_resource_tags(KeyId=key_id),
    }
    return calls[op]()


@pytest.mark.parametrize("state_index,state", list(enumerate(STATES)))
@pytest.mark.parametrize("op", list(TABLE))
def test_key_state_table(kms, partner, op, state_index, state):
    key, blob, alias, suffix = _cell(kms, partner, state)
    expected = TABLE[op][state_index]
    if expected is None:
        _run(kms, op, key, blob, alias, partner, suffix)
        return
    code, tail = expected
    with pytest.raises(getattr(kms.exceptions, code)) as excinfo:
        _run(kms, op, key, blob, alias, partner, suffix)
    assert error_of(excinfo) == (code, f"{key['Arn']} {tail}")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# --- Errors as boto3's exception classes --------------------------------------------------


def test_not_found(kms):
    missing = str(uuid.uuid4())
    with pytest.raises(kms.exceptions.NotFoundException) as excinfo:
        kms.describe_key(KeyId=missing)
    assert error_of(excinfo) == (
        "NotFoundException",
        f"Key 'arn:aws:kms:{REGION}:{ACCOUNT}:key/{missing}' does not exist",
    )
    with pytest.raises(kms.exceptions.NotFoundException) as excinfo:
        kms.encrypt(KeyId="alias/never-created", Plaintext=b"x")
    assert error_of(excinfo) == (
        "NotFoundException",
        f"Alias arn:aws:kms:{REGION}:{ACCOUNT}:alias/never-created is not found.",
    )


def test_invalid_ciphertext(kms):
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=b"\x01" * 64)


def test_incorrect_key(kms):
    first = new_key(kms)
    second = new_key(kms)
    blob = kms.encrypt(KeyId=first["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(kms.exceptions.IncorrectKeyException):
        kms.decrypt(CiphertextBlob=blob, KeyId=second["KeyId"])


def test_alias_already_exists(kms):
    key = new_key(kms)["KeyId"]
    alias = f"alias/twice-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    with pytest.raises(kms.exceptions.AlreadyExistsException) as excinfo:
        kms.create_alias(AliasName=alias, TargetKeyId=key)
    assert error_of(excinfo) == (
        "AlreadyExistsException",
        f"An alias with the name arn:aws:kms:{REGION}:{ACCOUNT}:{alias} already exists",
    )


def test_reserved_alias_is_not_authorized(kms):
    key = new_key(kms)["KeyId"]
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=key)
    assert error_of(excinfo)[0] == "NotAuthorizedException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_invalid_alias_name(kms):
    key = new_key(kms)["KeyId"]
    with pytest.raises(kms.exceptions.InvalidAliasNameException):
        kms.create_alias(AliasName="alias/", TargetKeyId=key)


def test_validation_errors_come_as_client_error(kms):
    key = new_key(kms)["KeyId"]
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=3)
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert "pendingWindowInDays" in message
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        kms.encrypt(KeyId=key, Plaintext=b"x" * 4097)
    assert error_of(excinfo)[0] == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        kms.generate_data_key(KeyId=key, KeySpec="AES_256", NumberOfBytes=32)
    assert error_of(excinfo)[0] == "ValidationException"


def test_limit_exceeded_on_demand_rotations(kms):
    key = new_key(kms)["KeyId"]
    for _ in range(25):
        kms.rotate_key_on_demand(KeyId=key)
    with pytest.raises(kms.exceptions.LimitExceededException):
        kms.rotate_key_on_demand(KeyId=key)
    assert len(kms.list_key_rotations(KeyId=key, Limit=1000)["Rotations"]) == 25


def test_invalid_key_usage(kms):
    key = new_key(kms)["KeyId"]
    with pytest.raises(kms.exceptions.InvalidKeyUsageException):
        kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")


def test_invalid_marker(kms):
    with pytest.raises(kms.exceptions.InvalidMarkerException):
        kms.list_keys(Marker="not-a-marker")


def test_tag_exception(kms):
    key = new_key(kms)["KeyId"]
    with pytest.raises(kms.exceptions.TagException):
        kms.tag_resource(KeyId=key, Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])


def test_unsupported_operation(kms):
    # SM2 is offered by AWS in its China regions only; hsm-kms holds no SM2 keys.
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.create_key(KeySpec="SM2", KeyUsage="SIGN_VERIFY")


def test_a_harness_signing_with_a_short_access_key_id_is_served(kms_as):
    # Test harnesses written for LocalStack or moto sign with ids like "test"; pointing them at
    # hsm-kms takes only the endpoint and a [[credentials]] entry.
    harness = kms_as("harness")
    key = harness.create_key(Description="from a harness")["KeyMetadata"]
    blob = harness.encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    assert harness.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
