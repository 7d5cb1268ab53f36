"""Asymmetric and HMAC keys with boto3 against `hsm-kms serve`: a JWT signed through Sign
and verified by PyJWT with the public key GetPublicKey returned; signatures checked with the
`cryptography` package; RSA-OAEP ciphertexts made outside with the public key decrypted by
the server; HMACs equal to Python's own; AWS's refusals for wrong usages and algorithms."""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import refused


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_jwt_signed_through_kms_verifies_with_pyjwt(kms):
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert key["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    assert "EncryptionAlgorithms" not in key
    header = {"alg": "ES256", "typ": "JWT"}
    claims = {"sub": "service-a", "aud": "service-b", "iat": 1764547200}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = kms.sign(
        KeyId=key["KeyId"], Message=signing_input.encode(), MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
    )["Signature"]
    # JWS wants r || s; KMS returns DER, as AWS does.
    r, s = decode_dss_signature(signature)
    token = f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    public = kms.get_public_key(KeyId=key["KeyId"])
    assert public["KeySpec"] == "ECC_NIST_P256" and public["KeyUsage"] == "SIGN_VERIFY"
    pem = serialization.load_der_public_key(public["PublicKey"]).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    decoded = jwt.decode(token, pem, algorithms=["ES256"], audience="service-b")
    assert decoded["sub"] == "service-a"


@pytest.mark.parametrize(
    "spec,algorithm",
    [
        ("RSA_2048", "RSASSA_PSS_SHA_256"),
        ("RSA_3072", "RSASSA_PKCS1_V1_5_SHA_384"),
        ("ECC_NIST_P384", "ECDSA_SHA_384"),
        ("ECC_SECG_P256K1", "ECDSA_SHA_256"),
    ],
)
def test_signatures_verify_with_the_cryptography_package(kms, spec, algorithm):
    key = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    message = b"artifact digest follows"
    signature = kms.sign(KeyId=key["KeyId"], Message=message, SigningAlgorithm=algorithm)["Signature"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[algorithm[-3:]]
    if algorithm.startswith("ECDSA"):
        public.verify(signature, message, ec.ECDSA(digest))
    elif "PSS" in algorithm:
        public.verify(signature, message, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    else:
        public.verify(signature, message, padding.PKCS1v15(), digest)
    assert kms.verify(KeyId=key["KeyId"], Message=message, Signature=signature, SigningAlgorithm=algorithm)["SignatureValid"]
    refused(
        lambda: kms.verify(KeyId=key["KeyId"], Message=b"tampered", Signature=signature, SigningAlgorithm=algorithm),
        "KMSInvalidSignatureException",
    )
    # DIGEST: the caller hashes.
    hashed = hashlib.new(f"sha{algorithm[-3:]}", message).digest()
    signature = kms.sign(KeyId=key["KeyId"], Message=hashed, MessageType="DIGEST", SigningAlgorithm=algorithm)["Signature"]
    assert kms.verify(KeyId=key["KeyId"], Message=message, Signature=signature, SigningAlgorithm=algorithm)["SignatureValid"]
    message = refused(
        lambda: kms.sign(KeyId=key["KeyId"], Message=b"short", MessageType="DIGEST", SigningAlgorithm=algorithm),
        "ValidationException",
    )
    assert message == f"Digest is invalid length for algorithm {algorithm}."


def test_rsa_oaep_ciphertexts_made_outside_decrypt(kms):
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    assert key["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    ciphertext = public.encrypt(b"db password", padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
    opened = kms.decrypt(CiphertextBlob=ciphertext, KeyId=key["Arn"], EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    assert opened["Plaintext"] == b"db password"
    assert opened["EncryptionAlgorithm"] == "RSAES_OAEP_SHA_1"
    refused(lambda: kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256"), "InvalidKeyUsageException")
    refused(lambda: kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x"), "InvalidKeyUsageException")


def test_hmac_keys_generate_and_verify_macs(kms):
    key = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    assert key["MacAlgorithms"] == ["HMAC_SHA_384"]
    mac = kms.generate_mac(KeyId=key["KeyId"], Message=b"session=42", MacAlgorithm="HMAC_SHA_384")["Mac"]
    assert len(mac) == 48
    assert kms.verify_mac(KeyId=key["KeyId"], Message=b"session=42", MacAlgorithm="HMAC_SHA_384", Mac=mac)["MacValid"]
    refused(
        lambda: kms.verify_mac(KeyId=key["KeyId"], Message=b"session=43", MacAlgorithm="HMAC_SHA_384", Mac=mac),
        "KMSInvalidMacException",
    )
    refused(lambda: kms.generate_mac(KeyId=key["KeyId"], Message=b"x", MacAlgorithm="HMAC_SHA_256"), "InvalidKeyUsageException")
    refused(lambda: kms.get_public_key(KeyId=key["KeyId"]), "UnsupportedOperationException")
    refused(lambda: kms.enable_key_rotation(KeyId=key["KeyId"]), "UnsupportedOperationException")


def test_create_key_refuses_what_aws_refuses(kms):
    message = refused(lambda: kms.create_key(KeySpec="RSA_2048"), "ValidationException")
    assert message == "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
    message = refused(lambda: kms.create_key(KeySpec="HMAC_256", KeyUsage="ENCRYPT_DECRYPT"), "ValidationException")
    assert message == "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec HMAC_256"
    message = refused(
        lambda: kms.create_key(KeySpec="RSA_2048", CustomerMasterKeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"),
        "ValidationException",
    )
    assert message.startswith("You cannot specify KeySpec and CustomerMasterKeySpec in the same request.")
    legacy = kms.create_key(CustomerMasterKeySpec="ECC_NIST_P521", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert legacy["KeySpec"] == legacy["CustomerMasterKeySpec"] == "ECC_NIST_P521"


def test_derive_shared_secret_agrees_with_the_peer(kms):
    key = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    assert key["KeyAgreementAlgorithms"] == ["ECDH"]
    ours = serialization.load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    peer = ec.generate_private_key(ec.SECP384R1())
    peer_public = peer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    derived = kms.derive_shared_secret(KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=peer_public)
    assert derived["SharedSecret"] == peer.exchange(ec.ECDH(), ours)
    assert derived["KeyAgreementAlgorithm"] == "ECDH" and derived["KeyOrigin"] == "AWS_KMS"
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    refused(lambda: kms.derive_shared_secret(KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=other), "ValidationException")


def test_data_key_pairs_for_the_caller(kms):
    key = kms.create_key()["KeyMetadata"]
    pair = kms.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec="ECC_NIST_P256", EncryptionContext={"app": "signer"})
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    assert private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == pair["PublicKey"]
    signature = private.sign(b"data", ec.ECDSA(hashes.SHA256()))
    serialization.load_der_public_key(pair["PublicKey"]).verify(signature, b"data", ec.ECDSA(hashes.SHA256()))
    opened = kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"], EncryptionContext={"app": "signer"})
    assert opened["Plaintext"] == pair["PrivateKeyPlaintext"]
    without = kms.generate_data_key_pair_without_plaintext(KeyId=key["KeyId"], KeyPairSpec="RSA_2048")
    assert "PrivateKeyPlaintext" not in without
    rsa_private = serialization.load_der_private_key(kms.decrypt(CiphertextBlob=without["PrivateKeyCiphertextBlob"])["Plaintext"], password=None)
    assert rsa_private.key_size == 2048
