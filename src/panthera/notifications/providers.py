"""HTTP adapters of the SMS and push ports: a Twilio-style Messages API, an FCM-style send."""

from __future__ import annotations

import httpx

from panthera.notifications.channels import PermanentFailure

# Provider answers that mean "this request will never succeed as it is".
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 409, 425, 429})


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    detail = f"{what} answered {response.status_code}: {response.text[:300]}"
    if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_CLIENT_ERRORS:
        raise PermanentFailure(detail)
    raise RuntimeError(detail)


class TwilioSms:
    """Twilio's Messages resource: ``POST {base}/2010-04-01/Accounts/{sid}/Messages.json``.

    Form-encoded ``To``, ``From`` and ``Body``, HTTP Basic auth with the account
    SID and auth token; many SMS gateways speak the same dialect.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        account_sid: str,
        auth_token: str,
        sender: str,
    ) -> None:
        self.client = client
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.auth = httpx.BasicAuth(account_sid, auth_token)
        self.sender = sender

    async def send_sms(self, *, to: str, body: str, message_id: str) -> None:
        response = await self.client.post(
            self.url,
            data={"To": to, "From": self.sender, "Body": body},
            auth=self.auth,
            # Lets a provider (or a proxy in front of it) drop a repeated request.
            headers={"I-Twilio-Idempotency-Token": message_id},
        )
        _raise_for(response, "the SMS provider")


class FcmPush:
    """FCM HTTP v1's ``messages:send``: ``{"message": {"token", "notification", "data"}}``."""

    def __init__(self, client: httpx.AsyncClient, *, url: str, token: str) -> None:
        self.client = client
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def send_push(
        self, *, token: str, title: str, body: str, data: dict[str, str], message_id: str
    ) -> None:
        message = {
            "token": token,
            "notification": {"title": title, "body": body},
            "data": {**data, "message_id": message_id},
        }
        response = await self.client.post(self.url, json={"message": message}, headers=self.headers)
        _raise_for(response, "the push provider")
