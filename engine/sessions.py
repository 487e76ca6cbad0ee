"""Trading sessions: when bars exist.

A :class:`Session` is a list of intervals in exchange-local wall-clock time and a time zone
(DST handled by ``zoneinfo``). Bars are left-closed and labelled by their start time in UTC: the
``1min`` bar labelled 14:30:00Z covers ``[14:30:00, 14:31:00)``. A session calendar for a date
is the sequence of bar start times inside its intervals; an interval not a multiple of the bar
length ends with a shorter bar. ``1d`` bars are labelled by the date (midnight UTC).

Presets: ``"us_equity"`` (09:30-16:00 America/New_York), ``"cn_equity"`` (09:30-11:30 and
13:00-15:00 Asia/Shanghai: a lunch break), ``"24h"`` (00:00-24:00 UTC).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["Session", "get_session", "FREQUENCIES", "freq_to_ns", "SESSIONS"]

FREQUENCIES = {"1s": 1, "5s": 5, "1min": 60, "5min": 300, "15min": 900, "30min": 1800, "1h": 3600, "1d": 86400}


def freq_to_ns(freq: str) -> int:
    """Bar length in nanoseconds for a supported frequency string."""
    try:
        return FREQUENCIES[freq] * 1_000_000_000
    except KeyError:
        raise ValueError(f"unsupported bar frequency {freq!r}; use one of {', '.join(FREQUENCIES)}") from None


@dataclass(frozen=True)
class Session:
    """Trading hours: ``intervals`` of ``("HH:MM", "HH:MM")`` local time in ``tz``.

    Examples
    --------
    >>> from factorflow.engine.sessions import get_session
    >>> s = get_session("cn_equity")
    >>> [(str(a)[11:16], str(b)[11:16]) for a, b in s.bounds_utc("2024-03-04")]  # UTC+8
    [('01:30', '03:30'), ('05:00', '07:00')]
    >>> len(s.bar_times("2024-03-04", "1min"))
    240
    """

    name: str
    intervals: tuple[tuple[str, str], ...]
    tz: str = "UTC"

    def bounds_utc(self, date: str) -> list[tuple[np.datetime64, np.datetime64]]:
        """The session's intervals on ``date`` as UTC ``datetime64[ns]`` pairs (start, end)."""
        day = _dt.date.fromisoformat(str(date)[:10])
        zone = ZoneInfo(self.tz)
        out = []
        for a, b in self.intervals:
            out.append((_to_utc(day, a, zone), _to_utc(day, b, zone)))
        return out

    def bar_times(self, date: str, freq: str) -> np.ndarray:
        """Start times (UTC, ``datetime64[ns]``) of the bars of ``date``."""
        if freq == "1d":
            return np.array([np.datetime64(str(date)[:10], "ns")])
        step = np.timedelta64(freq_to_ns(freq), "ns")
        parts = [np.arange(a, b, step) for a, b in self.bounds_utc(date)]
        return np.concatenate(parts) if parts else np.array([], dtype="datetime64[ns]")

    @property
    def seconds(self) -> int:
        """Length of the session in seconds (on a day without a DST change)."""
        total = 0
        for a, b in self.intervals:
            total += _minutes(b) * 60 - _minutes(a) * 60
        return total


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _to_utc(day: _dt.date, hhmm: str, zone: ZoneInfo) -> np.datetime64:
    minutes = _minutes(hhmm)
    local = _dt.datetime.combine(day, _dt.time(0, 0), tzinfo=zone) + _dt.timedelta(minutes=minutes)
    if minutes < 24 * 60:  # wall-clock time on that day (DST aware)
        local = _dt.datetime.combine(day, _dt.time(minutes // 60, minutes % 60), tzinfo=zone)
    utc = local.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return np.datetime64(utc, "ns")


SESSIONS = {
    "us_equity": Session("us_equity", (("09:30", "16:00"),), "America/New_York"),
    "cn_equity": Session("cn_equity", (("09:30", "11:30"), ("13:00", "15:00")), "Asia/Shanghai"),
    "24h": Session("24h", (("00:00", "24:00"),), "UTC"),
}


def get_session(session: "str | Session") -> Session:
    """A preset by name, or the :class:`Session` itself."""
    if isinstance(session, Session):
        return session
    try:
        return SESSIONS[session]
    except KeyError:
        raise ValueError(f"unknown session {session!r}; presets: {', '.join(SESSIONS)} "
                         "(or pass a factorflow.engine.sessions.Session)") from None
