"""The AWS Encryption SDK for Python (v4) against `hsm-kms serve`: its KMS master key
provider wraps a message's data key with GenerateDataKey and unwraps it with Decrypt,
through a botocore session whose KMS endpoint is hsm-kms (`AWS_ENDPOINT_URL_KMS`)."""

from __future__ import annotations

import os

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy

from conftest import PROFILE


@pytest.fixture
def botocore_session(server, session, monkeypatch):
    """A botocore session for the profile, with the KMS endpoint set the way a user would:
    through the environment, so the SDK's own clients reach hsm-kms."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.endpoint)
    return botocore.session.Session(profile=PROFILE)


def test_encrypt_and_decrypt_a_message(kms, botocore_session):
    arn = kms.create_key(Description="encryption sdk")["KeyMetadata"]["Arn"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[arn], botocore_session=botocore_session
    )
    message = os.urandom(4096) + b"the end"
    context = {"purpose": "client test"}

    ciphertext, header = client.encrypt(source=message, key_provider=provider, encryption_context=context)
    assert message not in ciphertext
    assert arn.encode() in ciphertext, "the message names the wrapping key"
    assert [key.key_provider.key_info for key in header.encrypted_data_keys] == [arn.encode()]
    assert header.encryption_context["purpose"] == "client test"

    decrypted, decrypt_header = client.decrypt(source=ciphertext, key_provider=provider)
    assert decrypted == message
    assert decrypt_header.encryption_context["purpose"] == "client test"

    other_arn = kms.create_key()["KeyMetadata"]["Arn"]
    other = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[other_arn], botocore_session=botocore_session
    )
    with pytest.raises(aws_encryption_sdk.exceptions.DecryptKeyError):
        client.decrypt(source=ciphertext, key_provider=other)
