#!/usr/bin/env python3
"""Verify a memberledger license file offline, in Python 3 with `cryptography`.

Usage: verify_license.py LICENSE_FILE PUBLIC_KEYS_JSON

PUBLIC_KEYS_JSON is the answer of `GET /v1/licenses/public-key` (or of
`memberledger licenses public-key`), which the software ships with. Prints the license's
facts as JSON and exits 0 when the file is signed by one of the keys and not stale; prints why
not and exits 1 otherwise. The test suite runs this script (tests/api/license_files.rs).
"""
import base64
import datetime
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def verify(certificate: str, keys: dict) -> dict:
    body = "".join(
        line.strip() for line in certificate.splitlines()
        if line.strip() and not line.startswith("-----")
    )
    envelope = json.loads(base64.b64decode(body, validate=True))
    if envelope.get("alg") != "ed25519" or envelope.get("enc") != "base64":
        raise ValueError("an unknown signing scheme")
    kid = envelope["kid"]
    if kid not in keys:
        raise ValueError(f"signed by key {kid}, which this software does not have")
    public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(keys[kid]))
    data = envelope["data"]
    try:
        # The signature covers `license/` and the base64 text: checked before decoding it.
        public_key.verify(base64.b64decode(envelope["sig"]), f"license/{data}".encode())
    except InvalidSignature:
        raise ValueError("the signature does not match: the file was changed") from None
    facts = json.loads(base64.b64decode(data))
    expires_at = datetime.datetime.fromisoformat(facts["expires_at"].replace("Z", "+00:00"))
    if datetime.datetime.now(datetime.timezone.utc) > expires_at:
        raise ValueError("the file has expired: fetch a new one")
    return facts


def main() -> int:
    certificate_path, keys_path = sys.argv[1], sys.argv[2]
    with open(keys_path) as f:
        keys = {k["kid"]: k["public_key"] for k in json.load(f)["keys"]}
    with open(certificate_path) as f:
        certificate = f.read()
    try:
        facts = verify(certificate, keys)
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        print(f"invalid: {error}")
        return 1
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
