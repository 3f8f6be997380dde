"""Two days of archives from the shared loghub samples (plus the shipped JSON events, metrics and
application logs), and the same records as a spool for the streaming path.

Day one holds each system's first 1,000 lines between 22:00 and midnight, day two the other
1,000 between 00:00 and 02:00, so day two's first windows need day one's last ones (the "vs
previous window" figures) and the metrics cross midnight (their anomaly baseline). Each
system's first three day-two lines are archived under day one (as a midnight rotation does), and
day one holds two malformed lines. The spool mirrors the archive file for file
(``logs/<service>/<date>.log``), each file's modification time set to its partition's reference
time (the last second of the day), so both paths see the same bytes and the same "received".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

from opsassist.parsing.events import parse_event
from opsassist.parsing.logs import parse_log, retime_line
from opsassist.parsing.metrics import parse_metric
from opsassist.pipelines.history import partition_reference
from opsassist.sources.spool import seed_spool

LOGHUB = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "loghub"
SYSTEMS = ("HDFS", "Hadoop", "Spark", "Zookeeper", "OpenSSH", "Linux", "Apache", "OpenStack")
BAD_LINES = (b'{"log": "unterminated', b"\x00\x01\x02 binary \x00 junk \x00")
MISPLACED = 3


@dataclasses.dataclass(frozen=True)
class TwoDays:
    archive: Path
    spool: Path
    days: tuple[dt.date, dt.date]
    lines: int  # log lines written (good ones)


def _write(files: dict[Path, list[bytes]], path: Path, line: bytes) -> None:
    files.setdefault(path, []).append(line)


def build_two_days(root: Path, first: dt.date, per_day: int = 1000) -> TwoDays:
    """Write ``root/archive`` and ``root/spool`` (see the module docstring); ``per_day``: lines
    of each system per day (at most 1,000)."""
    second = first + dt.timedelta(days=1)
    midnight = dt.datetime.combine(second, dt.time(), tzinfo=dt.UTC)
    archive, spool = root / "archive", root / "spool"
    files: dict[Path, list[bytes]] = {}
    lines = 0
    for system in SYSTEMS:
        raw = (LOGHUB / system / f"{system}_2k.log").read_text(encoding="utf-8").splitlines()
        step = 7200 / per_day  # two hours each side of midnight
        for index, line in enumerate(raw):
            if index % 1000 >= per_day:
                continue
            if index < 1000:
                when = midnight - dt.timedelta(hours=2) + dt.timedelta(seconds=step * index)
                day = first
            else:
                when = midnight + dt.timedelta(seconds=step * (index - 1000))
                day = first if index < 1000 + MISPLACED else second
            text = retime_line(line, when)
            _write(
                files, archive / "logs" / f"date={day}" / system / f"{system}.log", text.encode()
            )
            lines += 1
    for bad in BAD_LINES:
        _write(files, archive / "logs" / f"date={first}" / "HDFS" / "HDFS.log", bad)
    # JSON events, metrics and application logs, shifted to end at 00:30 on day two
    seed = root / "seed"
    seed_spool(seed, midnight + dt.timedelta(minutes=30))
    for path in sorted(seed.rglob("*.jsonl")):
        kind_dir = path.relative_to(seed).parts[0]
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            if kind_dir == "events":
                when = parse_event(line, received=midnight).timestamp
            elif kind_dir == "metrics":
                when = parse_metric(line, received=midnight)[0].timestamp
            else:
                when = parse_log(line, service="", received=midnight).timestamp
            inner = path.relative_to(seed / kind_dir)
            target = archive / kind_dir / f"date={when.date()}" / inner
            _write(files, target, line.encode())
            lines += kind_dir == "logs"
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\n".join(content) + b"\n")
        mirror = _spool_path(archive, spool, path)
        mirror.parent.mkdir(parents=True, exist_ok=True)
        mirror.write_bytes(path.read_bytes())
        day = dt.date.fromisoformat(next(p for p in path.parts if p.startswith("date="))[5:])
        stamp = partition_reference(day).timestamp()
        os.utime(mirror, (stamp, stamp))
    return TwoDays(archive, spool, (first, second), lines)


def _spool_path(archive: Path, spool: Path, path: Path) -> Path:
    """``archive/logs/date=D/HDFS/HDFS.log`` -> ``spool/logs/HDFS/D.log`` (same service)."""
    kind_dir, date_dir, *inner = path.relative_to(archive).parts
    day = date_dir[len("date=") :]
    if kind_dir == "logs" and len(inner) > 1:
        return spool / kind_dir / inner[0] / f"{day}{Path(inner[-1]).suffix}"
    return spool / kind_dir / f"{Path(inner[-1]).stem}-{day}{Path(inner[-1]).suffix}"
