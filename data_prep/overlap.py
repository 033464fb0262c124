"""Split integrity: the same record must not be in two splits.

A record in both train and test makes the test score a memory test; nothing in the raw layouts
prevents it (a jsonl line copied into two files, an id listed twice in split.json, a MultiBench
sample repeated). `OverlapCheck` looks at two things:
- the same id in two splits (Hateful Memes "id", MM-IMDb ids of split.json, MultiBench "id", COCO
  image ids), checked before any image is decoded;
- an identical sample under different ids: the same image bytes and the same text (image + text
  datasets), or the same feature arrays after the loader rules (MultiBench).
By default an overlap is a DataError naming both records (file and line / record) and the splits.
With `allow=True` (`python -m data_prep prepare --allow-overlap`) the record is kept in the split
that comes first in `order` (test, then dev, then train: evaluation sets stay as published) and
dropped from the other, counted under "also in <split> (same id)" or "also in <split> (identical
content)" in the manifest's "dropped" section and the converter log. `summary()` is the manifest's
"split_overlap" section: the policy, what was compared and the counts per pair of splits.
"""

from __future__ import annotations

from .issues import DataError

ID, CONTENT = "same id", "identical content"


class OverlapCheck:
    def __init__(self, allow: bool, order: tuple[str, ...] = ("test", "dev", "train")):
        self.allow, self.order = allow, tuple(order)
        self._ids: dict[str, tuple[str, str]] = {}       # id -> (split, where) of its first split
        self._drop_ids: dict[tuple[str, str], str] = {}  # (split, id) -> the split that keeps it
        self._content: dict[str, tuple[str, str]] = {}
        self._found: dict[str, dict[str, int]] = {}
        self._dropped: dict[str, int] = {}
        self._compared: dict[str, int] = {}

    def _overlap(self, kind: str, split: str, other: str, where: str, other_where: str, value: str) -> str:
        if not self.allow:
            what = f"the same id {value!r}" if kind == ID else "an identical sample (same content)"
            raise DataError(
                f"{other_where} and {where}: {what} in the {other} and {split} splits; expected disjoint splits "
                f"(pass --allow-overlap to drop it from {split} and count it)"
            )
        pair = "/".join(sorted((split, other), key=self.order.index))
        self._found.setdefault(pair, {ID: 0, CONTENT: 0})[kind] += 1
        self._dropped[split] = self._dropped.get(split, 0) + 1
        return f"also in {other} ({kind})"

    def check_ids(self, split: str, items: list[tuple[str, str]]) -> None:
        """Register the (id, where) of one split; call for the splits in `order`... or any order:
        the split that comes first in `order` keeps a shared id."""
        self._compared[split] = self._compared.get(split, 0) + len(items)
        for raw_id, where in items:
            first = self._ids.get(raw_id)
            if first is None or first[0] == split:
                self._ids.setdefault(raw_id, (split, where))
                continue
            keep, lose = sorted([(first[0], first[1]), (split, where)], key=lambda x: self.order.index(x[0]))
            if (lose[0], raw_id) in self._drop_ids:
                continue
            self._overlap(ID, lose[0], keep[0], lose[1], keep[1], raw_id)
            self._drop_ids[(lose[0], raw_id)] = keep[0]
            self._ids[raw_id] = keep

    def dropped(self, split: str, raw_id: str) -> bool:
        """Whether `raw_id` of `split` is dropped because another split keeps the same id."""
        return (split, raw_id) in self._drop_ids

    def reason_id(self, split: str, raw_id: str) -> str:
        return f"also in {self._drop_ids[(split, raw_id)]} ({ID})"

    def check_content(self, split: str, digest: str, where: str) -> str | None:
        """Call in `order` (test first): -> None to keep the record, or the drop reason (allow=True);
        DataError for a sample already seen in another split (allow=False)."""
        first = self._content.get(digest)
        if first is None:
            self._content[digest] = (split, where)
            return None
        if first[0] == split:
            return None
        return self._overlap(CONTENT, split, first[0], where, first[1], digest)

    def summary(self) -> dict:
        return {
            "policy": "drop from the later split (--allow-overlap)" if self.allow else "error",
            "compared": "ids, and sample content (image bytes + text, or feature arrays)",
            "keep_order": list(self.order),
            "records_compared": dict(sorted(self._compared.items())),
            "found": {pair: dict(c) for pair, c in sorted(self._found.items())},
            "dropped": dict(sorted(self._dropped.items())),
        }
