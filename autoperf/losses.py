"""Records a sink could not deliver (queue or spill full, disk trouble): counted as they are lost, then
said in one ``warning`` record with the count and since when. The PostgreSQL store and the OTLP
exporter each keep one."""
from __future__ import annotations


class Losses:
    __slots__ = ("code", "count", "since")

    def __init__(self, code: str):
        self.code = code
        self.count = 0
        self.since = None       # ISO time of the first loss not yet reported

    def add(self, n: int):
        self.count += n
        if self.since is None:
            from autoperf import records
            self.since = records.now_iso()

    def report(self, message: str):
        """Emit the warning (``message`` formatted with ``{n}``) when something was lost since the last."""
        n, since = self.count, self.since
        if not n:
            return
        self.count, self.since = 0, None
        from autoperf import pipeline
        pipeline.emit({"type": "warning", "level": "WARNING", "code": self.code, "count": n, "since": since,
                       "message": message.format(n=n)})
