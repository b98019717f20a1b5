"""Shared fixtures for the Python interop suite.

The broker under test is named by the AMQP_URL environment variable, e.g.
``amqp://guest:guest@127.0.0.1:5672/%2f``. Every entity a test declares gets a unique
name (pid + random suffix) so that the suite can run in parallel with other suites against
one broker, and every test deletes what it declared.
"""

import os
import secrets
import urllib.parse

import pytest


def unique(prefix: str) -> str:
    """A queue/exchange name that no other test or run uses."""
    return f"interop-py-{prefix}-{os.getpid()}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = os.environ.get("AMQP_URL")
    if not url:
        pytest.exit("AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)", returncode=2)
    return url


@pytest.fixture(scope="session")
def vhost(amqp_url: str) -> str:
    """The virtual host named by AMQP_URL, as the broker sees it (reply texts quote it)."""
    path = urllib.parse.urlsplit(amqp_url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"
