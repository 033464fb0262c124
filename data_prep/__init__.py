"""Data preparation for the WMA book: raw layouts -> a prepared format that trains fast.

    python -m data_prep synth hateful_memes --out RAW --n 2000 --seed 0
    python -m data_prep prepare hateful_memes --raw RAW --out OUT --image-size 64 --patch-size 16
    python -m data_prep probe OUT

Python:
    from data_prep.synth import synthesize          # twin in the raw layout
    from data_prep.prepare import prepare           # raw -> prepared folder + manifest.json
    from data_prep.dataset import PreparedDataset, make_loader, read_manifest, task_info
"""

from .config import DATASETS, MMIMDB_GENRES, PrepareConfig, SynthConfig
from .issues import DataError

__all__ = ["DATASETS", "MMIMDB_GENRES", "DataError", "PrepareConfig", "SynthConfig"]
