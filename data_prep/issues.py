"""Bad-input policy: errors that name the file and record, and counted skips.

Every converter reports a bad record in one of two ways:
- `DataError`: raised at once, for input that means the file itself is wrong (wrong pickle keys or
  shapes, a label out of range). The message names the file and the record.
- `SkipLog.skip(...)`: the record is left out and counted under its reason in the manifest's
  "dropped" section, for damage a user expects to survive (a missing or corrupt image, a malformed
  jsonl line, an unknown genre, NaN/inf features). With `strict=True` it raises DataError instead.
`SkipLog.rule(...)` counts records left out by a documented dataset rule (MultiBench drops samples
whose text is all zero); these are not bad input, so --strict does not turn them into errors.
`SkipLog.report(path=...)` appends every record left out (file, record, reason) to the converter's
log, `LOG_FILE` in the prepared folder; the counts are in the manifest (and the book's data table).
"""

from __future__ import annotations

import sys
from collections import defaultdict


LOG_FILE = "prepare.log"


class DataError(ValueError):
    """Raw input that cannot be converted; the message names the file and the record."""


class SkipLog:
    """Counts per split and reason; `as_dict()` is the manifest's "dropped" section."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self._counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._records: list[tuple[str, str, str]] = []  # (split, reason, where) of every skip

    def skip(self, split: str, reason: str, where: str) -> None:
        """Leave out one record of bad input (or raise with strict=True).

        split: "train" | "dev" | "test" (or a file name for files outside the splits).
        reason: short stable text, the manifest key ("missing image", "unknown genre Foo").
        where: "<file> <record>" for the error message, e.g. "train.jsonl line 7 (id 42953)".
        """
        if self.strict:
            raise DataError(f"{where}: {reason} (--strict makes every skip an error)")
        self._counts[split][reason] += 1
        self._records.append((split, reason, where))

    def drop(self, split: str, reason: str, where: str) -> None:
        """Leave out one record on the user's request (--allow-overlap): counted and logged, never an error."""
        self._counts[split][reason] += 1
        self._records.append((split, reason, where))

    def rule(self, split: str, reason: str, count: int = 1) -> None:
        """Count `count` records left out by a documented dataset rule (never an error)."""
        if count:
            self._counts[split][reason] += count

    def total(self, split: str) -> int:
        return sum(self._counts[split].values()) if split in self._counts else 0

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {s: dict(sorted(r.items())) for s, r in sorted(self._counts.items()) if r}

    def report(self, stream=sys.stderr, path=None, title: str = "records left out") -> None:
        """Print a one-line summary per split with skips to ``stream``; or, with ``path``, append the
        full log (the summary, then every skipped record with its file and record) to that file."""
        lines = [f"[data_prep] {split}: left out " + ", ".join(f"{n} x {r}" for r, n in reasons.items())
                 for split, reasons in self.as_dict().items()]
        if path is None:
            for line in lines:
                print(line, file=stream)
            return
        detail = [f"{split}: {reason}: {where}" for split, reason, where in self._records]
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"# {title}: {sum(self.total(s) for s in self._counts)}\n")
            f.write("".join(line + "\n" for line in lines + detail))
