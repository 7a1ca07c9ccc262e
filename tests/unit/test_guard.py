"""Target policy: URL checks, address classification, ALLOWED_HOSTS parsing."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from timer_controller.delivery.policy import (
    BlockedDestinationError,
    TargetPolicy,
    check_address,
    check_url,
    is_blocked_address,
    is_legacy_ipv4,
    parse_allowed_hosts,
)
from timer_controller.domain.task import MAX_URL_CHARS

OPEN = TargetPolicy()
BLOCK = TargetPolicy(block_private_networks=True)
NAMES = TargetPolicy(allowed_hosts=("api.example.com", "*.hooks.example.org"))
RANGES = TargetPolicy(allowed_hosts=("10.0.0.0/8",))
BLOCK_BUT_TEN = TargetPolicy(block_private_networks=True, allowed_hosts=("10.0.0.0/8",))
BLOCK_NAME = TargetPolicy(block_private_networks=True, allowed_hosts=("api.example.com",))


@pytest.mark.parametrize(
    ("url", "policy", "expected"),
    [
        ("https://api.example.com/hook", OPEN, None),
        ("http://api.example.com:8080/h?q=1", OPEN, None),
        ("", OPEN, "empty URL"),
        ("   ", OPEN, "empty URL"),
        ("http:///path", OPEN, "malformed URL: no host"),
        ("http://:80/", OPEN, "malformed URL: no host"),
        ("api.example.com/hook", OPEN, "malformed URL: no scheme"),
        ("ftp://files.example.com/", OPEN, "unsupported scheme 'ftp' (only http and https)"),
        ("file:///etc/passwd", OPEN, "unsupported scheme 'file' (only http and https)"),
        ("http://" + "a" * MAX_URL_CHARS, OPEN, "URL longer than 2048 characters"),
        ("http://api.example.com:99999/", OPEN, "malformed URL: port 99999 out of range"),
        ("http://bad host/", OPEN, "malformed URL: invalid host 'bad%20host'"),
        ("http://127.1/", OPEN, "malformed URL: non-canonical IPv4 address '127.1'"),
        ("http://2130706433/", OPEN, "malformed URL: non-canonical IPv4 address '2130706433'"),
        ("http://0x7f.1/", OPEN, "malformed URL: non-canonical IPv4 address '0x7f.1'"),
        ("http://127.0.0.1/", OPEN, None),
        ("http://127.0.0.1/", BLOCK, "blocked destination"),
        ("http://169.254.169.254/latest/meta-data/", BLOCK, "blocked destination"),
        ("http://[::1]:8080/", BLOCK, "blocked destination"),
        ("http://[::ffff:10.0.0.1]/", BLOCK, "blocked destination"),
        ("http://[fe80::1%25eth0]/", BLOCK, "blocked destination"),
        ("http://8.8.8.8/", BLOCK, None),
        # A name cannot be judged before it is resolved; the client does that.
        ("http://localhost/", BLOCK, None),
        ("http://API.Example.com/", NAMES, None),
        ("http://a.b.hooks.example.org/", NAMES, None),
        ("http://hooks.example.org/", NAMES, "host not in ALLOWED_HOSTS"),
        ("http://evil-api.example.com/", NAMES, "host not in ALLOWED_HOSTS"),
        ("http://8.8.8.8/", NAMES, "host not in ALLOWED_HOSTS"),
        ("http://10.1.2.3/", RANGES, None),
        ("http://11.1.2.3/", RANGES, "host not in ALLOWED_HOSTS"),
        # With a range listed, any name may resolve into it.
        ("http://svc.internal/", RANGES, None),
        ("http://10.1.2.3/", BLOCK_BUT_TEN, None),
        ("http://192.168.1.1/", BLOCK_BUT_TEN, "blocked destination"),
    ],
)
def test_check_url(url: str, policy: TargetPolicy, expected: str | None) -> None:
    assert check_url(url, policy) == expected


def test_check_url_reports_what_httpx_rejects() -> None:
    reason = check_url("http://0177.0.0.1/", OPEN)
    assert reason is not None
    assert reason.startswith("malformed URL: ")


@pytest.mark.parametrize(
    ("host", "legacy"),
    [
        ("127.1", True),
        ("2130706433", True),
        ("0x7f.1", True),
        ("0X7F000001", True),
        ("example.123", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("example.com", False),
        ("1password.com", False),
        ("0x.example", False),
    ],
)
def test_is_legacy_ipv4(host: str, legacy: bool) -> None:
    assert is_legacy_ipv4(host) is legacy


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.0.1", True),
        ("169.254.169.254", True),
        ("0.0.0.0", True),
        ("100.64.0.1", True),
        ("100.127.255.254", True),
        ("224.0.0.1", True),
        ("239.255.255.250", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("::", True),
        ("::1", True),
        ("fc00::1", True),
        ("fd12:3456::1", True),
        ("fe80::1", True),
        ("fec0::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("2002:7f00:1::", True),
        ("2002:a9fe:a9fe::", True),
        ("64:ff9b::a00:1", True),
        ("8.8.8.8", False),
        ("1.1.1.1", False),
        ("100.128.0.1", False),
        ("2606:4700:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
        ("2002:808:808::", False),
    ],
)
def test_is_blocked_address(address: str, blocked: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert is_blocked_address(ip, BLOCK) is blocked
    assert is_blocked_address(ip, OPEN) is False


@pytest.mark.parametrize(
    ("address", "allowed_hosts", "blocked"),
    [
        ("10.1.2.3", ("10.0.0.0/8",), False),
        ("::ffff:10.1.2.3", ("10.0.0.0/8",), False),
        ("192.168.1.1", ("10.0.0.0/8",), True),
        ("fd00::5", ("fd00::/8",), False),
        ("127.0.0.1", ("127.0.0.1",), False),
        ("127.0.0.2", ("127.0.0.1",), True),
        ("127.0.0.1", ("localhost",), True),
    ],
)
def test_listed_range_overrides_private_block(
    address: str, allowed_hosts: tuple[str, ...], blocked: bool
) -> None:
    policy = TargetPolicy(block_private_networks=True, allowed_hosts=allowed_hosts)
    assert is_blocked_address(ipaddress.ip_address(address), policy) is blocked


@pytest.mark.parametrize(
    ("address", "policy", "host_listed", "expected"),
    [
        ("8.8.8.8", OPEN, False, None),
        ("127.0.0.1", BLOCK, False, "private or reserved address"),
        ("8.8.8.8", NAMES, True, None),
        ("8.8.8.8", NAMES, False, "not in ALLOWED_HOSTS"),
        ("10.9.9.9", RANGES, False, None),
        ("11.9.9.9", RANGES, False, "not in ALLOWED_HOSTS"),
        # A listed name does not lift the private block; DNS can change under it.
        ("10.0.0.5", BLOCK_NAME, True, "private or reserved address"),
        ("93.184.216.34", BLOCK_NAME, True, None),
    ],
)
def test_check_address(
    address: str, policy: TargetPolicy, host_listed: bool, expected: str | None
) -> None:
    ip = ipaddress.ip_address(address)
    assert check_address(ip, policy, host_listed=host_listed) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        ("  ", ()),
        ("api.example.com", ("api.example.com",)),
        ("API.Example.COM.", ("api.example.com",)),
        ("a.example.com,b.example.com", ("a.example.com", "b.example.com")),
        ("a.example.com b.example.com", ("a.example.com", "b.example.com")),
        (" a.example.com , ,\n*.example.org\t", ("a.example.com", "*.example.org")),
        ("10.0.0.0/8, fd00::/8", ("10.0.0.0/8", "fd00::/8")),
        ("127.0.0.1", ("127.0.0.1/32",)),
        ("::1", ("::1/128",)),
        ("bücher.example", ("xn--bcher-kva.example",)),
        ("localhost", ("localhost",)),
    ],
)
def test_parse_allowed_hosts(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_allowed_hosts(raw) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "https://api.example.com",
        "api.example.com:8443",
        "api.example.com/path",
        "user@api.example.com",
        "*",
        "*.",
        "api.*.example.com",
        "-bad.example.com",
        "a..b",
        "127.1",
        "300.1.1.1",
        "10.0.0.1/8",
        "10.0.0.0/33",
    ],
)
def test_parse_allowed_hosts_names_the_bad_entry(bad: str) -> None:
    with pytest.raises(ValueError, match="ALLOWED_HOSTS entry") as info:
        parse_allowed_hosts(f"ok.example.com, {bad}")
    assert f"'{bad}'" in str(info.value)
    assert "\n" not in str(info.value)


def test_policy_rejects_bad_entries_at_construction() -> None:
    with pytest.raises(ValueError, match="'not a host'"):
        TargetPolicy(allowed_hosts=("not a host",))


def test_blocked_destination_is_an_httpx_transport_error() -> None:
    error = BlockedDestinationError("blocked destination: 10.0.0.1")
    assert isinstance(error, httpx.TransportError)
    assert "blocked destination" in str(error)
