"""The Redis fixture starts a real server that answers commands."""

import redis


def test_redis_server_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        assert client.info("server")["redis_version"]
    finally:
        client.close()
