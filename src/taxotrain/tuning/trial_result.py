"""What a trial process leaves for the study loop: ``trial.json`` in the trial's run folder.

A leaf module, so the study loop (``study.py``) and the trial process (``worker.py``) share the format without
importing each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from taxotrain.files import write_text_atomic

RESULT_FILE = "trial.json"


@dataclass
class TrialResult:
    """A finished trial: ``state`` (complete, pruned or interrupted), the best epoch's ``value`` of ``metric``, the
    epochs validated, and the trial process's id and peak memory (``trials.csv`` shows that each trial ran in a
    fresh process whose memory did not creep)."""

    state: str
    value: float | None
    epochs: int
    metric: str
    pid: int | None = None
    max_rss_mb: float | None = None

    def write(self, run_dir: Path) -> Path:
        """Write ``trial.json`` into the trial's run folder (atomically)."""
        return write_text_atomic(Path(run_dir) / RESULT_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, run_dir: Path) -> TrialResult | None:
        """The ``trial.json`` of a run folder, or ``None`` when the trial wrote none."""
        path = Path(run_dir) / RESULT_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(data["state"], data.get("value"), int(data.get("epochs", 0)), data.get("metric", ""),
                   data.get("pid"), data.get("max_rss_mb"))
