"""The kinds of value a spec names, each checked in one place: `SpecError` and its one line.

A check takes the key the user typed (e.g. `optimizer.betas`) and the value, and returns the
value normalized (a float, an int, a tuple) or raises `SpecError` with one line naming the key,
the bad value and what is valid:

    Number     a finite number (bool is not one) >= low (> low when strict), an integer if
               integer, below high (at most high when closed); numeric strings are read
    Numbers    a list of Numbers: `length` of them, or strictly increasing
    flag       true or false, nothing else
    one_of     one of the names of a table
    check_keys the keys of a section: none unknown, none missing (configs/ gives every value)
    own_options  the options of one optimizer or schedule: check_keys, then each value
               checked by its kind

`harness.config` turns a SpecError into its ConfigError (same line); `harness.train` lets it
through (it is a ValueError).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class SpecError(ValueError):
    """A value is not what its spec allows; the message is one line for the user."""


def one_of(key: str, value: Any, valid: Iterable[str]) -> str:
    """`value` if it is one of `valid` (a tuple of names, or a table's keys)."""
    if value not in valid:
        raise SpecError(f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")
    return value


def flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{key}={value!r} is not valid; type {key}=true or {key}=false")
    return value


def as_list(value: Any) -> list[Any]:
    """A list or tuple as a list; anything else as a list of one."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class Number:
    """A finite number >= low (> low when strict), an integer when integer; below high, or at
    most high when closed. `hint` is what the message says when the value is above the range
    (default: the interval); it may name {key}."""

    low: float = 0.0
    strict: bool = False
    integer: bool = False
    high: float | None = None
    closed: bool = False
    hint: str | None = None

    def parse(self, key: str, value: Any) -> int | float:
        """The value as an int or a float, checked against its type and `low` (not `high`)."""
        try:
            x = int(value) if self.integer else float(value)
            ok = (not isinstance(value, bool) and math.isfinite(x)
                  and (not self.integer or float(value) == x))
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok or (x <= self.low if self.strict else x < self.low):
            what = "an integer" if self.integer else "a number"
            bound = f"> {self.low:g}" if self.strict else f">= {self.low:g}"
            raise SpecError(f"{key}={value!r} is not valid; it must be {what} {bound}")
        return x

    def below_high(self, x: float) -> bool:
        return self.high is None or (x <= self.high if self.closed else x < self.high)

    def check(self, key: str, value: Any) -> int | float:
        x = self.parse(key, value)
        if not self.below_high(x):
            interval = (f"{'(' if self.strict else '['}{self.low:g}, {self.high:g}"
                        f"{']' if self.closed else ')'}")
            hint = (self.hint or "it must be in {interval}").format(key=key, interval=interval)
            raise SpecError(f"{key}={value!r} is not valid; {hint}")
        return x


@dataclass(frozen=True)
class Numbers:
    """A list (or tuple) of `item`s as a tuple: `length` of them when given, strictly
    increasing when `increasing`. `hint` says what to give instead; it may name {key}."""

    item: Number
    hint: str
    length: int | None = None
    increasing: bool = False

    def check(self, key: str, value: Any) -> tuple[int | float, ...]:
        items = tuple(self.item.parse(key, x) for x in as_list(value))
        ok = ((self.length is None or len(items) == self.length)
              and all(map(self.item.below_high, items))
              and (not self.increasing or list(items) == sorted(set(items))))
        if not ok:
            raise SpecError(f"{key}={list(items)} is not valid; {self.hint.format(key=key)}")
        return items


class Flag:
    """true or false (a kind with `check`, like Number)."""

    def check(self, key: str, value: Any) -> bool:
        return flag(key, value)


Kind = Number | Numbers | Flag


def check_keys(given: Iterable[str], valid: Iterable[str], *, unknown: Callable[[str], str],
               missing: Callable[[str], str]) -> None:
    """Every key given is valid and every valid key is given (configs/ gives every value: a
    missing one is an error, never a default); else SpecError with the line `unknown(key)` or
    `missing(key)` of the first offending key."""
    given, valid = list(given), list(valid)
    for key in given:
        if key not in valid:
            raise SpecError(unknown(key))
    for key in valid:
        if key not in given:
            raise SpecError(missing(key))


def own_options(group: str, name: str, given: Mapping[str, Any],
                kinds: Mapping[str, Kind]) -> dict[str, Any]:
    """The options of `group`=`name` (e.g. optimizer=adam: betas, eps), in the order of
    `kinds`, each given and checked by its kind; a key `name` does not take, or one it takes
    that is not given, is a SpecError naming those it takes."""
    takes = ", ".join(kinds) or "no options"
    check_keys(given, kinds,
               unknown=lambda key: f"{group}.{key} is not an option of {group}={name}; it "
                                   f"takes: {takes}",
               missing=lambda key: f"{group}.{key} is missing; {group}={name} takes {takes} "
                                   f"(each file in configs/{group}/ gives them)")
    return {key: kind.check(f"{group}.{key}", given[key]) for key, kind in kinds.items()}
