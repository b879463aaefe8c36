"""/healthz, /metrics, the [web] config section, `imagine-bot keys`, and the server in the bot's loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from bot.__main__ import main
from bot.config import ConfigError, load_config
from bot.frontends.web import WebFrontEnd, WebSettings
from tests.fakes import FakePipeline
from tests.service_support import ADA, service_env
from tests.web_support import auth, key_for, web_env


async def test_healthz_flips_to_503_when_the_database_is_read_only(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        r = await web.client.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok", "reason": "ok"}
        await web.env.db.execute("PRAGMA query_only = ON")
        r = await web.client.get("/healthz")
        assert r.status_code == 503 and "database is not writable" in r.json()["reason"]
        await web.env.db.execute("PRAGMA query_only = OFF")
        assert (await web.client.get("/healthz")).status_code == 200
        await web.env.queue.close(drain=False)  # the model no longer serves the queue
        r = await web.client.get("/healthz")
        assert r.status_code == 503 and "model" in r.json()["reason"]


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.split(" ")[0] == name or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_move_after_a_job(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        h = auth(await key_for(web.env, ADA))
        before = (await web.client.get("/metrics")).text
        assert "imagine_queue_images 0.0" in before
        assert _sample(before, "imagine_images_generated_total") == 0
        job = (await web.client.post("/v1/images", json={"prompt": "a fox", "count": 2}, headers=h)).json()["job_id"]
        assert (await web.client.post("/v1/images", json={"prompt": "a GORY battle"}, headers=h)).status_code == 403
        for _ in range(300):
            if (await web.client.get(f"/v1/jobs/{job}", headers=h)).json()["status"] == "done":
                break
            await asyncio.sleep(0.1)
        after = (await web.client.get("/metrics")).text
        assert _sample(after, "imagine_images_generated_total") == 2
        assert _sample(after, "imagine_batches_total") == 1
        assert 'imagine_batch_size_bucket{le="2.0"} 1.0' in after
        assert _sample(after, "imagine_generation_seconds_count") == 1
        assert _sample(after, "imagine_queue_seconds_count") == 1
        assert 'imagine_requests_total{frontend="web"} 1.0' in after
        assert 'imagine_refusals_total{frontend="web",reason="blocked_prompt"} 1.0' in after
        assert _sample(after, "imagine_images_per_second") > 0
        # chat front ends are counted by the same service, labelled by platform
        await web.env.service.imagine(ADA, "a chat fox", target={"chat_id": 1})
        text = (await web.client.get("/metrics")).text
        assert 'imagine_requests_total{frontend="telegram"} 1.0' in text
        await web.env.service.set_dm_closed(ADA, True)
        assert 'imagine_delivery_failures_total{frontend="telegram",reason="dm_closed"} 1.0' in \
            (await web.client.get("/metrics")).text


async def test_metrics_token_from_the_environment(tmp_path: Path) -> None:
    settings = WebSettings(enabled=True, metrics_token_required=True, metrics_token="s3cret")
    assert "s3cret" not in repr(settings)
    async with web_env(tmp_path, settings=settings) as web:
        assert (await web.client.get("/metrics")).status_code == 401
        assert (await web.client.get("/metrics", headers=auth("wrong"))).status_code == 401
        assert (await web.client.get("/metrics", headers=auth("s3cret"))).status_code == 200


def test_web_config_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[web]\nenabled = true\nport = 9000\npublic_url = "https://x.example/"\n'
                    "metrics_token_required = true\n")
    config = load_config(path, env={"IMAGINE_METRICS_TOKEN": "zq-9f3k"})
    assert config.web is not None and config.web.port == 9000 and config.web.public_url == "https://x.example"
    assert config.web.metrics_token == "zq-9f3k" and "zq-9f3k" not in repr(config)
    with pytest.raises(ConfigError, match="IMAGINE_METRICS_TOKEN"):
        load_config(path, env={})
    path.write_text('[web]\nenabled = true\nmetrics_token = "oops"\n')
    with pytest.raises(ConfigError, match="environment"):
        load_config(path, env={})
    path.write_text('[web]\nenabled = true\nprot = 1\n')
    with pytest.raises(ConfigError, match="web.prot"):
        load_config(path, env={})
    path.write_text('[web]\nenabled = true\nport = "80"\n')
    with pytest.raises(ConfigError, match="web.port"):
        load_config(path, env={})
    path.write_text('[web]\nenabled = false\n')
    assert load_config(path, env={}).web is None


def test_chat_share_links_point_where_the_gallery_answers(tmp_path: Path) -> None:
    """[web] off: no link at all; on without public_url: the local address; else public_url."""
    from bot.app import gallery_url

    path = tmp_path / "c.toml"
    for table, expected in [
        ("enabled = false", ""),
        ("enabled = true\ngallery = false", ""),
        ('enabled = true\nlisten = "0.0.0.0"\nport = 9000', "http://127.0.0.1:9000"),
        ('enabled = true\nlisten = "192.168.1.5"', "http://192.168.1.5:8080"),
        ('enabled = true\npublic_url = "https://x.example/"', "https://x.example"),
    ]:
        path.write_text(f"[web]\n{table}\n")
        assert gallery_url(load_config(path, env={})) == expected, table


def test_sign_in_links_point_where_the_web_front_end_answers_gallery_or_not(tmp_path: Path) -> None:
    """/web's link is a full address even when the gallery is off (it was a bare path then)."""
    path = tmp_path / "c.toml"
    for table, expected in [
        ("enabled = true\ngallery = false", "http://127.0.0.1:8080"),
        ('enabled = true\ngallery = false\nlisten = "::"\nport = 9000', "http://127.0.0.1:9000"),
        ('enabled = true\nlisten = "::1"', "http://[::1]:8080"),
        ('enabled = true\ngallery = false\npublic_url = "https://x.example/"', "https://x.example"),
    ]:
        path.write_text(f"[web]\n{table}\n")
        assert load_config(path, env={}).web.url == expected, table


async def test_web_sign_in_link_is_whole_with_the_gallery_off(tmp_path: Path, tiny) -> None:
    from tests.service_support import ADA, service_env

    async with service_env(tmp_path, tiny, public_url="", web_url="http://127.0.0.1:8080") as env:
        link = await env.service.web_signin_link(ADA)
    assert link.startswith("http://127.0.0.1:8080/signin/") and len(link) > len("http://127.0.0.1:8080/signin/") + 16


def test_keys_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    assert main(["keys", "create", "telegram:1001", "--label", "laptop", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    key = out.strip().splitlines()[-1]
    assert key.startswith("ib_") and len(key) > 40
    assert main(["keys", "list", "telegram:1001", "--config", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "laptop" in listing and "live" in listing and key not in listing and key[:9] in listing
    assert "never used" in listing
    assert main(["keys", "revoke", "telegram:1001", "1", "--config", str(path)]) == 0
    assert main(["keys", "revoke", "telegram:1001", "1", "--config", str(path)]) == 1
    assert main(["keys", "list", "nocolon", "--config", str(path)]) == 2

    async def check() -> None:
        async with service_env(tmp_path / "svc", FakePipeline()) as env:
            assert await env.service.authenticate(key) is None
            new_key = await key_for(env, ADA)
            found = await env.service.authenticate(new_key)
            assert found is not None and found[0].key == ADA.key

    asyncio.run(check())


async def test_uvicorn_serves_inside_the_bots_loop(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        await env.service.receive("web", "1:lost-in-a-crash", {"prompt": "a fox"})  # no job was made
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0))
        await front.start()
        try:
            assert await env.service.unhandled("web") == []  # its client retries; nothing to replay
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front.port}", timeout=10) as client:
                assert (await client.get("/healthz")).status_code == 200
                docs = await client.get("/docs")
                assert docs.status_code == 200 and "swagger" in docs.text.lower()
                spec = (await client.get("/openapi.json")).json()
                assert {"/v1/images", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/history",
                        "/v1/quota", "/v1/images/{ref}/rating"} <= set(spec["paths"])
        finally:
            await asyncio.wait_for(front.close(), 15)


async def test_run_bot_serves_the_web_and_not_the_terminal_chat(tmp_path: Path) -> None:
    import os
    import signal
    import socket

    from bot.app import run_bot
    from bot.service.keys import operator_create
    from storage import Database

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "c.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[output]\ndir = "{tmp_path / "out"}"\n'
                    f"[web]\nenabled = true\nport = {port}\n")
    config = load_config(path, env={})
    async with Database.open(config.storage.database) as db:
        key, _ = await operator_create(db, "web:ada")
    bot = asyncio.create_task(run_bot(config, model="tiny", lines=["/imagine never read"]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(600):  # bounded: 60 s for the tiny model to load
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert not bot.done(), bot
                await asyncio.sleep(0.1)
            r = await client.post("/v1/images", json={"prompt": "a fox", "steps": 1}, headers=auth(key))
            assert r.status_code == 202
            job = r.json()["job_id"]
            for _ in range(600):
                body = (await client.get(f"/v1/jobs/{job}", headers=auth(key))).json()
                if body["status"] == "done":
                    break
                await asyncio.sleep(0.1)
            assert body["status"] == "done"
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(bot, 60)
    assert not (tmp_path / "out").exists()  # the terminal chat did not run


async def test_health_asks_healthz_when_web_is_enabled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        front = WebFrontEnd(env.service, WebSettings(enabled=True, port=0))
        await front.start()
        config = tmp_path / "c.toml"
        config.write_text(f'[storage]\ndata_dir = "{tmp_path / "none"}"\n[web]\nenabled = true\n'
                          f'listen = "0.0.0.0"\nport = {front.port}\n')
        health = ["health", "--config", str(config)]
        try:  # the server answers from this loop: the command runs in a thread
            assert await asyncio.to_thread(main, health) == 0
            assert f"127.0.0.1:{front.port}/healthz answered 200" in capsys.readouterr().out
            await env.db.execute("PRAGMA query_only = ON")
            assert await asyncio.to_thread(main, health) == 1
            assert "answered 503: the database is not writable" in capsys.readouterr().err
            await env.db.execute("PRAGMA query_only = OFF")
        finally:
            await asyncio.wait_for(front.close(), 15)
        assert await asyncio.to_thread(main, health) == 1
        assert "unhealthy: cannot reach" in capsys.readouterr().err
        # [web] off: the heartbeat, as before (there is none in that data_dir)
        config.write_text(f'[storage]\ndata_dir = "{tmp_path / "none"}"\n[web]\nenabled = false\n')
        assert await asyncio.to_thread(main, health) == 1
        assert "no heartbeat" in capsys.readouterr().err


async def test_last_used_at_is_set_at_most_once_a_minute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        svc = env.service
        key = await key_for(env, ADA)
        assert (await svc.api_keys(ADA))[0].last_used_at is None
        assert await svc.authenticate(key) is not None
        first = (await svc.api_keys(ADA))[0].last_used_at
        assert first is not None
        env.clock.advance(seconds=30)
        await svc.authenticate(key)
        assert (await svc.api_keys(ADA))[0].last_used_at == first  # no write for every request
        env.clock.advance(seconds=31)
        await svc.authenticate(key)
        later = (await svc.api_keys(ADA))[0].last_used_at
        assert later is not None and later > first
