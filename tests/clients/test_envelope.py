"""`hsm-kms encrypt-file` / `decrypt-file` against the AWS Encryption SDK for Python, both
through the same `hsm-kms serve`: messages the SDK writes decrypt with the CLI and messages
the CLI writes decrypt with the SDK, for both committing suites, several frame lengths,
empty input, exactly one frame, multi-key messages and non-ASCII encryption contexts."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.identifiers import Algorithm

from conftest import PROFILE, REPO

BINARY = REPO / "target" / "debug" / "hsm-kms"
SUITES = {
    "AES_256_GCM_HKDF_SHA512_COMMIT_KEY": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
    "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
}
# The Python SDK writes only multiples of 128 bytes.
FRAME_LENGTHS = [128, 1024, 4096]
CONTEXT = {"purpose": "envelope interop", "テナント": "naïve ✓ café"}


@pytest.fixture(scope="module")
def keys(kms) -> list[str]:
    return [kms.create_key(Description=f"envelope {i}")["KeyMetadata"]["Arn"] for i in range(2)]


@pytest.fixture
def sdk(server, session, monkeypatch):
    """The SDK client and a provider factory whose KMS clients reach hsm-kms."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.endpoint)
    botocore_session = botocore.session.Session(profile=PROFILE)
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )

    def provider(*key_ids: str):
        return aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
            key_ids=list(key_ids), botocore_session=botocore_session
        )

    return client, provider


def cli(server, aws_env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [BINARY, *args, "--endpoint-url", server.endpoint],
        env=aws_env,
        capture_output=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


def context_args(context: dict[str, str]) -> list[str]:
    return list(itertools.chain.from_iterable(("--encryption-context", f"{k}={v}") for k, v in context.items()))


def plaintexts(frame_length: int) -> dict[str, bytes]:
    return {
        "empty": b"",
        "one frame": os.urandom(frame_length),
        "frames and a bit": os.urandom(2 * frame_length + 3),
    }


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("frame_length", FRAME_LENGTHS)
def test_sdk_messages_decrypt_with_the_cli(server, aws_env, keys, sdk, tmp_path: Path, suite, frame_length):
    client, provider = sdk
    for name, plaintext in plaintexts(frame_length).items():
        message, _ = client.encrypt(
            source=plaintext,
            key_provider=provider(*keys),
            encryption_context=CONTEXT,
            frame_length=frame_length,
            algorithm=SUITES[suite],
        )
        encrypted = tmp_path / f"{name}.encrypted"
        encrypted.write_bytes(message)
        decrypted = tmp_path / f"{name}.decrypted"
        # Only the second key: any one key of a multi-key message decrypts it.
        cli(server, aws_env, "decrypt-file", "--key-id", keys[1], "--input", str(encrypted),
            "--output", str(decrypted), *context_args(CONTEXT))
        assert decrypted.read_bytes() == plaintext, name


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("frame_length", FRAME_LENGTHS)
def test_cli_messages_decrypt_with_the_sdk(server, aws_env, keys, sdk, tmp_path: Path, suite, frame_length):
    client, provider = sdk
    for name, plaintext in plaintexts(frame_length).items():
        source = tmp_path / name
        source.write_bytes(plaintext)
        encrypted = tmp_path / f"{name}.encrypted"
        cli(server, aws_env, "encrypt-file", "--key-id", keys[0], "--key-id", keys[1],
            "--input", str(source), "--output", str(encrypted), "--suite", suite,
            "--frame-length", str(frame_length), *context_args(CONTEXT))
        decrypted, header = client.decrypt(source=encrypted.read_bytes(), key_provider=provider(keys[1]))
        assert decrypted == plaintext, name
        assert header.algorithm == SUITES[suite]
        assert header.frame_length == frame_length
        assert {k: header.encryption_context[k] for k in CONTEXT} == CONTEXT
        assert {k.key_provider.key_info for k in header.encrypted_data_keys} == {k.encode() for k in keys}


def test_cli_streams_through_stdin_and_stdout(server, aws_env, keys, sdk):
    client, provider = sdk
    plaintext = os.urandom(100_000)
    encrypted = subprocess.run(
        [BINARY, "encrypt-file", "--endpoint-url", server.endpoint, "--key-id", keys[0],
         "--input", "-", "--output", "-"],
        env=aws_env, input=plaintext, capture_output=True, timeout=120, check=True,
    ).stdout
    assert client.decrypt(source=encrypted, key_provider=provider(keys[0]))[0] == plaintext
    decrypted = subprocess.run(
        [BINARY, "decrypt-file", "--endpoint-url", server.endpoint, "--key-id", keys[0],
         "--input", "-", "--output", "-"],
        env=aws_env, input=encrypted, capture_output=True, timeout=120, check=True,
    ).stdout
    assert decrypted == plaintext


def test_decrypt_refuses_a_context_without_the_required_pairs(server, aws_env, keys, sdk, tmp_path: Path):
    client, provider = sdk
    message, _ = client.encrypt(source=b"data", key_provider=provider(keys[0]), encryption_context=CONTEXT)
    encrypted = tmp_path / "message"
    encrypted.write_bytes(message)
    output = tmp_path / "out"
    result = cli(server, aws_env, "decrypt-file", "--key-id", keys[0], "--input", str(encrypted),
                 "--output", str(output), "--encryption-context", "purpose=other", check=False)
    assert result.returncode == 1
    assert b"lacks the pair" in result.stderr
    assert not output.exists()
    assert list(tmp_path.iterdir()) == [encrypted], "no partial output left behind"


def test_a_directory_with_the_data_key_cache_shares_data_keys_as_configured(server, aws_env, keys, sdk, tmp_path: Path):
    client, provider = sdk
    source = tmp_path / "plain"
    source.mkdir()
    files = {f"file-{i}": os.urandom(1000 + i) for i in range(5)}
    for name, data in files.items():
        (source / name).write_bytes(data)
    encrypted = tmp_path / "encrypted"
    cli(server, aws_env, "encrypt-file", "--key-id", keys[0], "--input", str(source), "--output",
        str(encrypted), "--cache-max-age", "5m", "--cache-max-messages", "3")
    data_keys = []
    for name, data in files.items():
        plaintext, header = client.decrypt(
            source=(encrypted / f"{name}.encrypted").read_bytes(), key_provider=provider(keys[0])
        )
        assert plaintext == data
        data_keys.append(header.encrypted_data_keys.pop().encrypted_data_key)
    # Three messages per data key, in order.
    assert data_keys[0] == data_keys[1] == data_keys[2] != data_keys[3] == data_keys[4]
    decrypted = tmp_path / "decrypted"
    cli(server, aws_env, "decrypt-file", "--key-id", keys[0], "--input", str(encrypted), "--output",
        str(decrypted))
    assert {p.name: p.read_bytes() for p in decrypted.iterdir()} == files



def test_decrypt_refuses_version_1_messages_under_the_commitment_policy(server, aws_env, keys, sdk, tmp_path: Path):
    _, provider = sdk
    legacy = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    message, header = legacy.encrypt(source=b"legacy", key_provider=provider(keys[0]))
    assert message[0] == 1, "a version-1 message"
    encrypted = tmp_path / "legacy"
    encrypted.write_bytes(message)
    result = cli(server, aws_env, "decrypt-file", "--key-id", keys[0], "--input", str(encrypted),
                 "--output", str(tmp_path / "out"), check=False)
    assert result.returncode == 1
    assert b"REQUIRE_ENCRYPT_REQUIRE_DECRYPT" in result.stderr
    assert not (tmp_path / "out").exists()


def test_discovery_decrypts_only_within_its_filter(server, aws_env, keys, sdk, tmp_path: Path):
    client, provider = sdk
    message, _ = client.encrypt(source=b"found", key_provider=provider(keys[0]))
    encrypted = tmp_path / "message"
    encrypted.write_bytes(message)
    output = tmp_path / "out"
    cli(server, aws_env, "decrypt-file", "--discovery", "--discovery-account", "111122223333",
        "--input", str(encrypted), "--output", str(output))
    assert output.read_bytes() == b"found"
    refused = cli(server, aws_env, "decrypt-file", "--discovery", "--discovery-account", "444455556666",
                  "--input", str(encrypted), "--output", str(tmp_path / "refused"), check=False)
    assert refused.returncode == 1
    assert b"no encrypted data key could be decrypted" in refused.stderr
    limited = cli(server, aws_env, "decrypt-file", "--key-id", keys[0], "--max-encrypted-data-keys", "0",
                  "--input", str(encrypted), "--output", str(tmp_path / "limited"), check=False)
    assert limited.returncode == 1
    assert b"at most 0 are allowed" in limited.stderr

from test_tls import _profile_value, tls_server  # noqa: E402,F401  (the HTTPS server fixture)


def test_cli_over_https_trusts_only_the_given_ca_bundle(tls_server, aws_env, tmp_path: Path):
    endpoint, cert, credentials = tls_server
    env = dict(aws_env, AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    kms = botocore.session.Session().create_client(
        "kms", endpoint_url=endpoint, verify=str(cert), region_name="us-east-1",
        aws_access_key_id=_profile_value(credentials, "aws_access_key_id"),
        aws_secret_access_key=_profile_value(credentials, "aws_secret_access_key"),
    )
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    source = tmp_path / "plain"
    source.write_bytes(os.urandom(10_000))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([BINARY, *args, "--endpoint-url", endpoint, "--key-id", arn],
                              env=env, capture_output=True, timeout=120)

    untrusted = run("encrypt-file", "--input", str(source), "--output", str(tmp_path / "refused"))
    assert untrusted.returncode == 1
    assert not (tmp_path / "refused").exists()
    encrypted, decrypted = tmp_path / "message", tmp_path / "decrypted"
    for args in (("encrypt-file", "--input", str(source), "--output", str(encrypted)),
                 ("decrypt-file", "--input", str(encrypted), "--output", str(decrypted))):
        result = run(*args, "--ca-bundle", str(cert))
        assert result.returncode == 0, result.stderr.decode()
    assert decrypted.read_bytes() == source.read_bytes()
