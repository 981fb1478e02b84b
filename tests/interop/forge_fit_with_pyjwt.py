"""Makes a Forge Invocation Token with an implementation independent of patgate's.

Reads {"claims": {...}, "kid": "..."} as JSON on stdin; generates an RSA key pair with
PyPI `cryptography`, signs the claims as an RS256 JWT with PyPI `PyJWT`, and prints
{"token": "...", "jwks": {"keys": [...]}} with the public key as a JWK.
"""
import json
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def main() -> None:
    request = json.load(sys.stdin)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": request["kid"], "alg": "RS256", "use": "sig"})
    token = jwt.encode(
        request["claims"],
        private_key,
        algorithm="RS256",
        headers={"kid": request["kid"]},
    )
    json.dump({"token": token, "jwks": {"keys": [jwk]}}, sys.stdout)


if __name__ == "__main__":
    main()
