"""Dataset schemas: named, ordered spans that cover a prompt (position-aware circuit discovery).

A schema divides one tokenized prompt (BOS at index 0) into consecutive, non-empty spans, each
with a role name, in the same order in every example of a task; the last token is alone in the
last span. Examples of different lengths line up through their span names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from circuits.errors import SchemaError


@dataclass(frozen=True)
class Span:
    """Tokens ``[start, end)`` of a prompt playing the role ``name``."""

    name: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Schema:
    """An ordered list of spans over a prompt of ``length`` tokens. Validated on construction."""

    spans: tuple[Span, ...]
    length: int

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_starts(
        cls,
        names: Sequence[str],
        starts: Sequence[int],
        length: int,
        *,
        source: str | None = None,
        line: int | None = None,
    ) -> Schema:
        """Build from each span's first token index (the schema-CSV layout); a span ends where the next starts."""
        if len(names) != len(starts):
            raise SchemaError(f"{len(names)} span names but {len(starts)} start indices", source=source, line=line)
        starts = [int(s) for s in starts]
        try:
            _check_names(names)
        except SchemaError as err:
            raise SchemaError(str(err), source=source, line=line) from None
        if int(length) < 1:
            raise SchemaError(f"length {length}: a prompt has at least one token (BOS)", source=source, line=line)
        for name, start in zip(names, starts, strict=True):
            if start < 0:
                raise SchemaError(
                    f"span {name!r} starts at token {start}; token indices count from 0 (BOS)", source=source, line=line
                )
        for prev_name, name, prev, start in zip(names, names[1:], starts, starts[1:]):
            if start < prev:
                raise SchemaError(
                    f"spans out of order: {name!r} starts at token {start}, before {prev_name!r} at token {prev}",
                    source=source,
                    line=line,
                )
            if start == prev:
                raise SchemaError(
                    f"spans {prev_name!r} and {name!r} overlap: both start at token {start}", source=source, line=line
                )
        if starts and starts[-1] >= int(length):
            raise SchemaError(
                f"span {names[-1]!r} starts at token {starts[-1]}, past the prompt's {length} tokens",
                source=source,
                line=line,
            )
        ends = list(starts[1:]) + [length]
        spans = tuple(Span(n, int(s), int(e)) for n, s, e in zip(names, starts, ends))
        try:
            return cls(spans, int(length))
        except SchemaError as err:
            raise SchemaError(str(err), source=source, line=line) from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.spans)

    @property
    def starts(self) -> tuple[int, ...]:
        return tuple(s.start for s in self.spans)

    def validate(self) -> None:
        """Raise :class:`SchemaError` unless the spans cover every token once, in order, last token alone."""
        if not self.spans:
            raise SchemaError("schema has no spans")
        _check_names(self.names)
        for span in self.spans:
            if span.end <= span.start:
                raise SchemaError(f"span {span.name!r} is empty or reversed ({span.start}..{span.end})")
        # Order first: a permutation of a good cover is "out of order", not "uncovered".
        for before, span in zip(self.spans, self.spans[1:]):
            if span.start < before.start:
                raise SchemaError(
                    f"spans out of order: {span.name!r} (at {span.start}) comes after {before.name!r} (at {before.start})"
                )
        prev: Span | None = None
        for span in self.spans:
            if prev is None:
                if span.start < 0:
                    raise SchemaError(
                        f"the first span {span.name!r} starts at token {span.start}; token indices count from 0 (BOS)"
                    )
                if span.start != 0:
                    raise SchemaError(
                        f"tokens 0..{span.start - 1} are not covered: the first span {span.name!r} starts at {span.start}"
                    )
            elif span.start < prev.end:
                raise SchemaError(
                    f"spans {prev.name!r} ({prev.start}..{prev.end}) and {span.name!r} ({span.start}..{span.end}) overlap"
                )
            elif span.start > prev.end:
                raise SchemaError(
                    f"tokens {prev.end}..{span.start - 1} between {prev.name!r} and {span.name!r} are not covered"
                )
            prev = span
        last = self.spans[-1]
        if last.end < self.length:
            raise SchemaError(f"tokens {last.end}..{self.length - 1} after the last span {last.name!r} are not covered")
        if last.end > self.length:
            raise SchemaError(f"span {last.name!r} ends at {last.end}, past the prompt's {self.length} tokens")
        if len(last) != 1:
            raise SchemaError(f"the last span {last.name!r} must hold the last token alone, it holds {len(last)}")

    def span_index(self) -> list[int]:
        """For each token position, the index of its span in this schema."""
        out: list[int] = []
        for i, span in enumerate(self.spans):
            out.extend([i] * len(span))
        return out

    def span_of(self, position: int) -> str:
        return self.spans[self.span_index()[position]].name

    def __len__(self) -> int:
        return len(self.spans)


def _check_names(names: Sequence[str]) -> None:
    """Raise :class:`SchemaError` unless every span name can be a graph position and none repeats.

    A span name becomes the position part of node ids (``"L1.attn/IO/5"``), so it is a non-empty
    printable string without ``/``, not all digits (that reads as a token index) and not ``*``
    (the position-agnostic column).
    """
    for name in names:
        if not isinstance(name, str) or not name or not name.isprintable() or "/" in name:
            raise SchemaError(f"bad span name {name!r}: a span name is a non-empty printable string without '/'")
        if name.isdigit():
            raise SchemaError(f"bad span name {name!r}: a span name cannot be all digits (that reads as a token index)")
        if name == "*":
            raise SchemaError("bad span name '*': it stands for every position; choose another name")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise SchemaError(f"span names repeat: {', '.join(dup)}")


def per_token_schema(length: int) -> Schema:
    """The schema a prompt without one gets: one span per token, ``t0``, ``t1``, ..., the last ``end``."""
    names = [f"t{i}" for i in range(length - 1)] + ["end"]
    return Schema.from_starts(names, list(range(length)), length)
