"""The checks every token signed by the provider gets (ID tokens, back-channel logout tokens):
its signature with the provider's key, the algorithm named in its header, audience (this
portal's client id), issuer, times with some clock skew, and the claims its kind requires. Each
failure becomes `refusal` with a message that says which check failed."""

import jwt
from django.conf import settings

CLOCK_SKEW_SECONDS = 60


def decode_provider_token(token: str, key, *, algorithm: str, issuer: str, require: list[str], refusal: type,
                          what: str, whose: str) -> dict:
    """`what`/`whose`: how the messages name the token ("the ID token", "the ID token's")."""
    try:
        return jwt.decode(token, key, algorithms=[algorithm], audience=settings.OIDC_RP_CLIENT_ID, issuer=issuer,
                          leeway=CLOCK_SKEW_SECONDS, options={"require": require})
    except jwt.ExpiredSignatureError:
        raise refusal(f"{what} has expired") from None
    except jwt.InvalidAudienceError:
        raise refusal(f"{what} was issued to another application") from None
    except jwt.InvalidIssuerError:
        raise refusal(f"{what} comes from another issuer") from None
    except jwt.InvalidSignatureError:
        raise refusal(f"{whose} signature is not the provider's") from None
    except jwt.PyJWTError as exc:
        raise refusal(f"{what} is not valid ({exc.__class__.__name__})") from None
