"""Bearer JWTs from an OIDC issuer: signature against the issuer's JWKS, then issuer, audience and expiry."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion.core.config import JwtConfig
from bastion.core.errors import AccessError, ConfigError


class JwtValidator:
    """Validates bearer JWTs: signature against the JWKS, issuer, audience, expiry, allowed algorithms."""

    def __init__(self, cfg: JwtConfig, home: Path) -> None:
        import jwt

        self.cfg, self._jwt = cfg, jwt
        self._jwks: jwt.PyJWKSet | None = None
        self._client: jwt.PyJWKClient | None = None
        if cfg.jwks_file:
            path = (home / cfg.jwks_file).resolve()
            try:
                self._jwks = jwt.PyJWKSet.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ConfigError(f"auth.jwt.jwks_file {str(path)!r}: cannot read a JWKS from it ({exc})") from exc
        elif cfg.jwks_url:
            self._client = jwt.PyJWKClient(cfg.jwks_url, cache_keys=True, lifespan=300, timeout=10)
        else:
            raise ConfigError("auth.jwt needs jwks_file or jwks_url")

    def _key(self, token: str) -> Any:
        jwt = self._jwt
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in self.cfg.algorithms:
            raise jwt.InvalidAlgorithmError(f"algorithm {header.get('alg')!r} is not allowed")
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = header.get("kid")
        assert self._jwks is not None  # read in __init__ when there is no JWKS URL
        keys = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
        if not keys:
            raise jwt.InvalidTokenError(f"no key with kid {kid!r} in the JWKS")
        return keys[0].key

    def validate(self, token: str) -> dict:
        """The token's claims; raises AccessError naming what is wrong."""
        jwt = self._jwt
        try:
            return jwt.decode(token, self._key(token), algorithms=self.cfg.algorithms, audience=self.cfg.audience,
                              issuer=self.cfg.issuer, leeway=self.cfg.leeway_s,
                              options={"require": ["exp", "iss", "aud", self.cfg.user_claim]})
        except jwt.ExpiredSignatureError:
            raise AccessError("token expired") from None
        except jwt.InvalidIssuerError:
            raise AccessError("token issuer is not the configured one") from None
        except jwt.InvalidAudienceError:
            raise AccessError("token audience is not the configured one") from None
        except jwt.PyJWTError as exc:
            raise AccessError(f"invalid token: {exc}") from None
