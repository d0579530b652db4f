"""A service account signing key, made without openssl or cryptography."""

from __future__ import annotations

import base64
import secrets


def rsa_private_key_pem(bits: int = 2048) -> str:
    """A fresh RSA key (PKCS#1 PEM) for signing service account tokens.

    kube-apiserver 1.20 refuses to start without one, and nothing here checks those
    tokens, so a plain textbook key is enough; generating it in Python keeps the tier
    free of an openssl (or cryptography) dependency.
    """
    small_primes = [p for p in range(3, 1000, 2) if all(p % q for q in range(3, p, 2))]

    def probable_prime(size: int) -> int:
        while True:
            n = secrets.randbits(size) | (3 << (size - 2)) | 1
            if any(n % p == 0 for p in small_primes):
                continue
            d, s = n - 1, 0
            while d % 2 == 0:
                d, s = d // 2, s + 1
            for _ in range(20):  # Miller-Rabin
                x = pow(secrets.randbelow(n - 3) + 2, d, n)
                if x in (1, n - 1):
                    continue
                for _ in range(s - 1):
                    x = pow(x, 2, n)
                    if x == n - 1:
                        break
                else:
                    break
            else:
                return n

    e = 65537
    while True:
        p, q = probable_prime(bits // 2), probable_prime(bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    d = pow(e, -1, phi)

    def der_length(n: int) -> bytes:
        if n < 0x80:
            return bytes([n])
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([0x80 | len(raw)]) + raw

    def der_integer(v: int) -> bytes:
        raw = v.to_bytes(v.bit_length() // 8 + 1, "big")  # a leading 0: never negative
        return b"\x02" + der_length(len(raw)) + raw

    fields = (0, p * q, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))
    body = b"".join(der_integer(v) for v in fields)
    encoded = base64.b64encode(b"\x30" + der_length(len(body)) + body).decode()
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *lines, "-----END RSA PRIVATE KEY-----"])
