"""Readers of the raw layouts: raw folder -> in-memory records, with bad input counted or raised.

Image+text readers return `ImageTextRaw` (images are decoded later, in `prepare`); the MultiBench
reader returns feature arrays already cleaned by MultiBench's loader rules.
"""

from .records import FeatureSplit, ImageTextRaw, ImageTextRecord

__all__ = ["FeatureSplit", "ImageTextRaw", "ImageTextRecord"]
