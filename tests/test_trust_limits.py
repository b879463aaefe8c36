"""Issue #22, item 4: abuse is bounded — failed API keys per address (growing waits, logged
without the key), keys per account, the public gallery per address, /forget revokes keys and ends
sessions, /metrics needs its token unless loopback-only (the web app over httpx, real service)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from bot.frontends.web import WebSettings
from bot.frontends.web.access import AuthThrottle
from bot.service import NotAllowed, Who
from tests.service_support import ADA, BOB
from tests.web_support import auth, key_for, web_env


def _client(app, address: str) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 5000)),
                             base_url="http://test")


async def test_failed_keys_from_one_address_wait_longer_each_time_and_are_logged(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    settings = WebSettings(enabled=True, rate_limit=1000, auth_failures_free=3)
    async with web_env(tmp_path, settings=settings) as web:
        good = await key_for(web.env, ADA)
        guess = "ib_" + "x" * 40
        async with _client(web.front.app, "198.51.100.7") as attacker, _client(web.front.app, "192.0.2.1") as other:
            with caplog.at_level(logging.WARNING, logger="bot.frontends.web.access"):
                codes = [(await attacker.get("/v1/quota", headers=auth(guess))).status_code for _ in range(5)]
            assert codes == [401, 401, 401, 401, 429]  # 3 free, the 4th earns a wait, the 5th waits
            refused = await attacker.get("/v1/quota", headers=auth(good))  # not even checked while it waits
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            assert (await other.get("/v1/quota", headers=auth(good))).status_code == 200  # per address
            logged = [r.getMessage() for r in caplog.records if "failed API authentication" in r.getMessage()]
            assert len(logged) == 4 and all("198.51.100.7" in m for m in logged)
            assert not any(guess in r.getMessage() or good in r.getMessage() for r in caplog.records)

    clock = [0.0]
    throttle = AuthThrottle(free=2, cap=60, clock=lambda: clock[0])
    waits = [throttle.failed("a") for _ in range(10)]
    assert waits == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]  # growing, capped
    clock[0] += 61
    assert throttle.wait("a") == 0
    throttle.succeeded("a")
    assert throttle.failed("a") == 0  # a success starts it over


async def test_an_account_has_at_most_max_keys_per_user_live_keys(tmp_path: Path) -> None:
    async with web_env(tmp_path, max_keys_per_user=2) as web:
        svc = web.env.service
        first, _ = await svc.create_api_key(ADA)
        await svc.create_api_key(ADA)
        with pytest.raises(NotAllowed, match="already have 2 live API keys"):
            await svc.create_api_key(ADA)
        await svc.create_api_key(BOB)  # per account
        keys = await svc.api_keys(ADA)
        await svc.revoke_api_key(ADA, keys[0].id)
        await svc.create_api_key(ADA)  # room again
        assert len([k for k in await svc.api_keys(ADA) if k.revoked_at is None]) == 2
    assert WebSettings().max_keys_per_user == 5


async def test_the_gallery_is_limited_per_client_address(tmp_path: Path) -> None:
    settings = WebSettings(enabled=True, rate_limit=1000, gallery_rate_limit=3)
    async with web_env(tmp_path, settings=settings) as web:
        async with _client(web.front.app, "198.51.100.8") as busy, _client(web.front.app, "192.0.2.2") as calm:
            codes = [(await busy.get("/")).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            last = await busy.get("/i/nosuchshare/thumb.jpg")
            assert last.status_code == 429 and int(last.headers["Retry-After"]) >= 1
            assert (await calm.get("/")).status_code == 200


async def test_forget_revokes_api_keys_and_ends_sessions(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        svc = web.env.service
        ended: list[int] = []

        async def end_sessions(user_id: int) -> int:
            ended.append(user_id)
            return 1

        svc.session_enders.append(end_sessions)
        key = await key_for(web.env, ADA)
        bob_key = await key_for(web.env, BOB)
        assert (await web.client.get("/v1/quota", headers=auth(key))).status_code == 200
        await svc.forget(ADA)
        assert (await web.client.get("/v1/quota", headers=auth(key))).status_code == 401
        assert (await web.client.get("/v1/quota", headers=auth(bob_key))).status_code == 200
        assert all(k.revoked_at is not None for k in await svc.api_keys(ADA))
        assert len(ended) == 1


@pytest.mark.parametrize(("listen", "token", "open_"), [("127.0.0.1", None, True), ("::1", None, True),
                                                        ("0.0.0.0", None, False), ("192.0.2.5", None, False),
                                                        ("0.0.0.0", "s3cret", False)])
async def test_metrics_need_the_token_unless_loopback_only(tmp_path: Path, listen: str, token: str | None,
                                                           open_: bool) -> None:
    settings = WebSettings(enabled=True, rate_limit=1000, listen=listen, metrics_token=token)
    async with web_env(tmp_path, settings=settings) as web:
        plain = await web.client.get("/metrics")
        assert (plain.status_code == 200) == open_, plain.text
        if not open_:
            assert plain.status_code in (401, 403) and "IMAGINE_METRICS_TOKEN" in plain.text
        if token:
            good = await web.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert good.status_code == 200 and b"imagine_requests" in good.content
            assert (await web.client.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_a_key_made_before_forget_on_a_linked_identity_stops_too(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        svc = web.env.service
        other = Who("discord", "77", "ada-on-discord")
        code = await svc.link_code(ADA)
        await svc.link(other, code)
        key = await key_for(web.env, other)  # a key of the account, made on the other platform
        await svc.forget(ADA)
        assert (await web.client.get("/v1/quota", headers=auth(key))).status_code == 401
