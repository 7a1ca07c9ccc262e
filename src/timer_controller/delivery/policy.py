"""Which targets the controller may send a request to: pure checks, no I/O.

Two settings shape the policy:

``BLOCK_PRIVATE_NETWORKS`` (off by default) refuses every address that is not
publicly routable: loopback, private (RFC 1918, ULA ``fc00::/7``), link-local
(``169.254.0.0/16`` with the ``169.254.169.254`` cloud metadata service,
``fe80::/10``), unspecified (``0.0.0.0``, ``::``), multicast, reserved,
carrier-grade NAT ``100.64.0.0/10``, site-local ``fec0::/10`` and the other
special-purpose ranges. IPv6 forms that embed an IPv4 address
(IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``)
are judged by the IPv4 address inside them.

``ALLOWED_HOSTS`` (empty by default: any target) lists what may be reached.
Each entry is a host name or an address range:

* ``api.example.com`` matches that URL host exactly, case-insensitively;
  ``*.example.com`` matches any name below ``example.com`` (not the apex).
* ``10.0.0.0/8`` (or a single address, ``10.1.2.3``) matches a literal IP in
  the URL *and* any address a host name resolves to.

A URL whose host is a listed name may be tried. A URL whose host is another
name may be tried only if some range is listed, and then only the resolved
addresses inside a listed range are connected to.

A listed range overrides ``BLOCK_PRIVATE_NETWORKS``: an operator who lists
``10.0.0.0/8`` means it. A listed *name* does not: if ``api.example.com``
resolves to ``10.0.0.5`` while private networks are blocked, it is refused
unless a range covering ``10.0.0.5`` is listed too, because DNS can change
under a name (rebinding) while a range cannot.

The address rules are applied by the HTTP client to the addresses it actually
connects to (see ``transport.py``); ``check_url`` applies them early to
literal IPs so that an obviously refused task fails without a connection.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx

from timer_controller.domain.task import MAX_URL_CHARS
from timer_controller.domain.text import quoted

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6598 shared address space; Python's is_private does not include it.
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
# A name whose last label is a number is an IPv4 address in legacy notation
# (127.1, 2130706433, 0x7f.1); resolvers map it onto an address.
_NUMERIC_LAST_LABEL = re.compile(r"(.*\.)?(0x[0-9a-f]*|[0-9]+)\.?", re.IGNORECASE)
_URL_PUNCTUATION = re.compile(r"[:/@?#\[\]\\%*\s]")


class BlockedDestinationError(httpx.TransportError):
    """The policy refuses every address the target resolves to."""


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    block_private_networks: bool = False
    allowed_hosts: tuple[str, ...] = ()
    # Derived from allowed_hosts once, so each check does no parsing.
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for entry in self.allowed_hosts:
            parsed = _parse_entry(entry)
            if isinstance(parsed, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                networks.append(parsed)
            elif parsed.startswith("*."):
                suffixes.append(parsed[1:])
            else:
                names.add(parsed)
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_suffixes", tuple(suffixes))
        object.__setattr__(self, "_networks", tuple(networks))

    def lists_name(self, host: str) -> bool:
        """True when ``host`` (an ASCII host name) matches a name entry."""
        host = host.lower().rstrip(".")
        return host in self._names or any(host.endswith(s) for s in self._suffixes)

    def lists_address(self, ip: IPAddress) -> bool:
        """True when ``ip``, or the IPv4 address embedded in it, is in a listed range."""
        inner = _embedded_ipv4(ip)
        return any(ip in net or (inner is not None and inner in net) for net in self._networks)

    @property
    def has_ranges(self) -> bool:
        return bool(self._networks)


def parse_allowed_hosts(raw: str) -> tuple[str, ...]:
    """Split ALLOWED_HOSTS on commas and/or white space into normalised entries."""
    entries = [part for part in re.split(r"[\s,]+", raw) if part]
    return tuple(str(_parse_entry(entry)) for entry in entries)


def check_url(url: str, policy: TargetPolicy) -> str | None:
    """None when the URL may be tried; otherwise a short reason why not."""
    if not url.strip():
        return "empty URL"
    if len(url) > MAX_URL_CHARS:
        return f"URL longer than {MAX_URL_CHARS} characters"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"malformed URL: {exc}"
    if not parsed.scheme:
        return "malformed URL: no scheme"
    if parsed.scheme not in ("http", "https"):
        return f"unsupported scheme '{parsed.scheme}' (only http and https)"
    host = parsed.raw_host.decode("ascii")
    if not host:
        return "malformed URL: no host"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"malformed URL: port {parsed.port} out of range"
    return _check_host(host, policy)


# URLs differ by path far more often than by host: the host's verdict (pure) is remembered.
@functools.lru_cache(maxsize=4096)
def _check_host(host: str, policy: TargetPolicy) -> str | None:
    ip = literal_ip(host)
    if ip is None:
        return _check_name(host, policy)
    if is_blocked_address(ip, policy):
        return "blocked destination"
    if policy.allowed_hosts and not policy.lists_address(ip):
        return "host not in ALLOWED_HOSTS"
    return None


def is_blocked_address(ip: IPAddress, policy: TargetPolicy) -> bool:
    """True when BLOCK_PRIVATE_NETWORKS refuses ``ip`` and no listed range allows it."""
    if policy.lists_address(ip):
        return False
    return policy.block_private_networks and not _is_public(ip)


def check_address(ip: IPAddress, policy: TargetPolicy, *, host_listed: bool) -> str | None:
    """None when ``ip`` may be connected to for a host (listed by name or not); else why not."""
    if policy.lists_address(ip):
        return None
    if policy.allowed_hosts and not host_listed:
        return "not in ALLOWED_HOSTS"
    if policy.block_private_networks and not _is_public(ip):
        return "private or reserved address"
    return None


def literal_ip(host: str) -> IPAddress | None:
    """The address when ``host`` (as in a URL, IPv6 without brackets) is an IP literal."""
    try:
        # A zone id arrives percent-encoded from a URL: fe80::1%25eth0.
        return ipaddress.ip_address(unquote(host) if ":" in host else host)
    except ValueError:
        return None


def is_legacy_ipv4(host: str) -> bool:
    """True for a host such as ``127.1``, ``2130706433`` or ``0x7f.1``.

    The system resolver reads these as an IPv4 address, but they are not IP
    literals, so they must be refused rather than treated as names.
    """
    return literal_ip(host) is None and _NUMERIC_LAST_LABEL.fullmatch(host) is not None


def _check_name(host: str, policy: TargetPolicy) -> str | None:
    if is_legacy_ipv4(host):
        return f"malformed URL: non-canonical IPv4 address '{host}'"
    if not _HOST_NAME.fullmatch(host):
        return f"malformed URL: invalid host '{host}'"
    if policy.allowed_hosts and not policy.lists_name(host) and not policy.has_ranges:
        return "host not in ALLOWED_HOSTS"
    return None


def _parse_entry(entry: str) -> str | IPNetwork:
    """One ALLOWED_HOSTS entry, normalised: a lower-case ASCII name or a network."""
    text = entry.strip()
    if not text:
        raise ValueError("ALLOWED_HOSTS has an empty entry")
    if literal_ip(text.partition("/")[0]) is not None:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"ALLOWED_HOSTS entry {quoted(entry)} is not a valid address range: {exc}"
            ) from None
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    ascii_name = ""
    # Characters that would make httpx read only part of the entry as the host.
    if not _URL_PUNCTUATION.search(name):
        with contextlib.suppress(httpx.InvalidURL):
            ascii_name = httpx.URL(f"http://{name}/").raw_host.decode("ascii").rstrip(".")
    if not _HOST_NAME.fullmatch(ascii_name) or _NUMERIC_LAST_LABEL.fullmatch(ascii_name):
        raise ValueError(
            f"ALLOWED_HOSTS entry {quoted(entry)} is neither a host name (like api.example.com "
            "or *.example.com, without scheme, port or path) nor an address range"
        )
    return f"*.{ascii_name}" if wildcard else ascii_name


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_public(ip: IPAddress) -> bool:
    inner = _embedded_ipv4(ip)
    if inner is not None:
        return _is_public(inner)
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False
    # is_global alone varies between Python patch releases; the explicit
    # flags make the documented ranges hold on every version.
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    )
