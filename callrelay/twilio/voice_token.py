"""Access tokens for the Twilio Voice SDK: what lets a browser place a call as the Caller."""

from __future__ import annotations

import re

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

from callrelay.config import Settings

IDENTITY = re.compile(r"[A-Za-z0-9_.@-]{1,121}")
"""What Twilio accepts as a client identity, less anything a `client:` URI would need escaped."""


def voice_token(settings: Settings, identity: str) -> str:
    """A signed JWT for `identity`: outgoing calls through the TwiML App (`TWILIO_APP_SID`),
    whose voice URL is this relay's `/voice`, for `VOICE_TOKEN_TTL_SECONDS`."""
    assert settings.twilio_account_sid and settings.twilio_api_key
    assert settings.twilio_api_secret and settings.twilio_app_sid
    token = AccessToken(
        settings.twilio_account_sid,
        settings.twilio_api_key,
        settings.twilio_api_secret.get_secret_value(),
        identity=identity,
        ttl=settings.voice_token_ttl_seconds,
    )
    token.add_grant(VoiceGrant(outgoing_application_sid=settings.twilio_app_sid))
    return str(token.to_jwt())
