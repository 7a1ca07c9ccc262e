"""A timer the controller would refuse is refused at creation, by the controller's own rules.

URL, method, headers and body go through ``delivery.policy.check_url`` and
``delivery.request`` (``check_method``, ``parse_headers``, ``check_body``):
the very code that turns a claimed row into a request. The headers are
checked in the JSON form they are stored in, so what passes here parses
there. Only what the schema itself cannot hold (column sizes) is added.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from timer_controller.api.idempotency import (
    UNPAIRED_SURROGATE,
    BadKey,
    check_key,
    request_hash,
)
from timer_controller.api.models import BatchIn, BatchItem, TimerSpec
from timer_controller.api.problems import ProblemItem
from timer_controller.api.times import TimeError, resolve
from timer_controller.db.models import HEADERS_MAX_BYTES, MEDIUMTEXT_MAX_BYTES
from timer_controller.db.timers import NewTimer
from timer_controller.delivery.policy import TargetPolicy, check_url
from timer_controller.delivery.request import (
    InvalidTask,
    check_body,
    check_method,
    parse_headers,
)
from timer_controller.domain.task import MAX_URL_CHARS


@dataclass(frozen=True, slots=True)
class TimerRules:
    """The settings that decide whether a timer is acceptable."""

    policy: TargetPolicy = field(default_factory=TargetPolicy)
    max_body_bytes: int = 1024 * 1024
    max_horizon_s: float = 365 * 86400.0
    #: What a timer without max_attempts gets (MAX_ATTEMPTS), for display.
    default_max_attempts: int = 3


# Timers often share their target: the check is pure, so answers are remembered
# (as the controller remembers them when it sends).
_check_url = functools.lru_cache(maxsize=4096)(check_url)
#: A path of these characters only is one check_url accepts as it is, whatever the
#: URL's scheme and authority: the verdict is then that of the URL without it.
_PLAIN_PATH = re.compile(r"/(?!/)[A-Za-z0-9._~/-]*")


def url_problem(url: str, policy: TargetPolicy) -> str | None:
    """``check_url``'s verdict, remembered per scheme and authority when the path is plain.

    A batch's URLs usually differ by path alone; parsing each cost more than the rest
    of its checks. Anything else (a query, an odd character) goes to check_url whole.
    """
    scheme, separator, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    plain = scheme in ("http", "https") and authority and _PLAIN_PATH.fullmatch(slash + path)
    if separator and plain and len(url) <= MAX_URL_CHARS:
        return _check_url(f"{scheme}://{authority}/", policy)
    return _check_url(url, policy)


def _check_encodable(spec: TimerSpec) -> None:
    """ValueError when a string holds what UTF-8 (and so MySQL) cannot: an unpaired surrogate.

    JSON may carry one (``"\\ud800"``); request_hash finds it too, when there is a key.
    """
    texts = [spec.url, spec.method or "", spec.body or "", spec.at or "", str(spec.delay)]
    for name, value in (spec.headers or {}).items():
        texts += [name, value]
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(UNPAIRED_SURROGATE) from None


class InvalidTimer(ValueError):
    def __init__(self, items: list[ProblemItem]) -> None:
        super().__init__(items[0].detail)
        self.items = items


def check_timer(
    spec: TimerSpec,
    *,
    rules: TimerRules,
    now: datetime,
    idempotency_key: str | None = None,
    index: int | None = None,
) -> NewTimer:
    """The row to insert for ``spec``; raises InvalidTimer listing every problem.

    ``now`` is naive UTC; ``index`` names a batch entry in the problems.
    """
    items: list[ProblemItem] = []

    def problem(name: str | None, detail: str) -> None:
        parts = [] if index is None else ["timers", str(index)]
        where = ".".join(parts + ([name] if name else [])) or None
        items.append(ProblemItem(index=index, field=where, detail=detail))

    fingerprint = None
    try:
        if idempotency_key is None:
            _check_encodable(spec)
        else:
            fields = spec.model_dump(mode="json", exclude_unset=True, exclude={"idempotency_key"})
            fingerprint = request_hash(fields)
    except ValueError as exc:
        # Nothing else is looked at: such a string cannot even be encoded.
        problem(None, str(exc))
        raise InvalidTimer(items) from None
    reason = url_problem(spec.url, rules.policy)
    if reason is not None:
        problem("url", reason)
    method = "POST"
    try:
        method = check_method(spec.method)
    except InvalidTask as exc:
        problem("method", str(exc))
    headers = None
    if spec.headers:
        headers = json.dumps(spec.headers, separators=(",", ":"))
        try:
            parse_headers(headers)
            if len(headers.encode()) > HEADERS_MAX_BYTES:
                problem("headers", f"headers take more than {HEADERS_MAX_BYTES} bytes as JSON")
        except InvalidTask as exc:
            problem("headers", str(exc))
    try:
        check_body(
            spec.body, method=method, max_body_bytes=min(rules.max_body_bytes, MEDIUMTEXT_MAX_BYTES)
        )
    except InvalidTask as exc:
        problem("body", str(exc))
    try:
        due = resolve(at=spec.at, delay=spec.delay, now=now, max_horizon_s=rules.max_horizon_s)
    except TimeError as exc:
        problem("delay" if spec.delay is not None else "at", str(exc))
    if items:
        raise InvalidTimer(items)
    return NewTimer(
        url=spec.url,
        due_at=due.due_at,
        delay_s=due.delay_s,
        method=None if spec.method is None else method,
        headers=headers,
        body=spec.body,
        max_attempts=spec.max_attempts,
        idempotency_key=idempotency_key,
        idempotency_hash=fingerprint,
    )


#: What a batch entry is, but for its URL and key: entries alike in this are alike
#: to every check but the URL's.
_Shape = tuple[object, ...]


def _shape(spec: TimerSpec) -> _Shape:
    headers = None if spec.headers is None else tuple(spec.headers.items())
    delay = (type(spec.delay), spec.delay)
    return (spec.method, headers, spec.body, spec.at, delay, spec.max_attempts)


def _like(spec: TimerSpec, checked: NewTimer, policy: TargetPolicy) -> NewTimer | None:
    """``check_timer(spec)`` when ``checked`` came from an entry of the same shape and no key.

    None when the URL is not one check_timer accepts as it is: check_timer then says why.
    """
    try:
        spec.url.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if url_problem(spec.url, policy) is not None:
        return None
    return NewTimer(
        url=spec.url,
        due_at=checked.due_at,
        delay_s=checked.delay_s,
        method=checked.method,
        headers=checked.headers,
        body=checked.body,
        max_attempts=checked.max_attempts,
    )


def check_batch(batch: BatchIn, *, rules: TimerRules, now: datetime) -> list[NewTimer]:
    """The rows to insert for a batch; raises InvalidTimer listing every entry's problems."""
    chunks = check_batch_chunks(batch, rules=rules, now=now, size=len(batch.timers))
    return [timer for chunk in chunks for timer in chunk]


def check_batch_chunks(
    batch: BatchIn, *, rules: TimerRules, now: datetime, size: int
) -> Iterator[list[NewTimer]]:
    """check_batch ``size`` entries at a time: each run's rows as soon as they are checked.

    After the first problem no more rows come; the rest is still checked, and
    InvalidTimer then lists every entry's problems.
    """
    check = _BatchChecks(rules=rules, now=now)
    specs = batch.timers
    for start in range(0, len(specs), size):
        end = min(start + size, len(specs))
        timers = [check.entry(index, specs[index]) for index in range(start, end)]
        if not check.items:
            yield [timer for timer in timers if timer is not None]
    if check.items:
        raise InvalidTimer(check.items)


class _BatchChecks:
    """check_timer for a batch's entries, one by one, and the batch's own rules (keys).

    A batch's entries often differ by URL alone: an entry without a key shaped
    like one already accepted (``_shape``) has only its URL checked (a property
    test holds this to check_timer's answers).
    """

    def __init__(self, *, rules: TimerRules, now: datetime) -> None:
        self._rules, self._now = rules, now
        self.items: list[ProblemItem] = []
        self._first_use: dict[str, int] = {}
        self._accepted: dict[_Shape, NewTimer] = {}

    def entry(self, index: int, spec: BatchItem) -> NewTimer | None:
        """The entry's row; None (its problems added to ``items``) when it has any."""
        key = spec.idempotency_key
        try:
            if key is not None:
                if key in self._first_use:
                    raise BadKey(f"idempotency key repeats entry {self._first_use[key]}'s")
                self._first_use[key] = index
                check_key(key)
                return check_timer(
                    spec, rules=self._rules, now=self._now, idempotency_key=key, index=index
                )
            shape = _shape(spec)
            like = self._accepted.get(shape)
            timer = None if like is None else _like(spec, like, self._rules.policy)
            if timer is None:
                timer = check_timer(spec, rules=self._rules, now=self._now, index=index)
                self._accepted[shape] = timer
            return timer
        except BadKey as exc:
            field = f"timers.{index}.idempotency_key"
            self.items.append(ProblemItem(index=index, field=field, detail=str(exc)))
        except InvalidTimer as exc:
            self.items += exc.items
        return None


def storable_keys(batch: BatchIn) -> list[str]:
    """The distinct idempotency keys of a batch that may be stored (check_key)."""
    keys: dict[str, None] = {}
    for spec in batch.timers:
        key = spec.idempotency_key
        if key is not None and key not in keys:
            try:
                keys[check_key(key)] = None
            except BadKey:
                continue
    return list(keys)
