"""Capture paths read values without running the program's code unless a target allows it (issue 19, item 10)."""
from __future__ import annotations

import json

from tests.faults import Program

PROGRAM = """
    import json
    ran = []
    class Sneaky:
        __slots__ = ("slot",)
        def __init__(self):
            self.slot = 7
    class User:
        kind = "member"
        def __init__(self):
            self.id = 42
            self.inner = Sneaky()
            self.tags = ["a", "b"]
        @property
        def name(self):
            ran.append("property")
            return "from-property"
        def __getattr__(self, attr):
            ran.append("__getattr__")
            return "from-getattr"
        def __len__(self):
            ran.append("__len__")
            return 3
        def __str__(self):
            ran.append("__str__")
            return "from-str"
        def __getitem__(self, key):
            ran.append("__getitem__")
            return "from-getitem"
    def handle(user):
        return user
    handle(User())
    print(json.dumps(ran))
"""
CAPTURES = """
    capture:
      id: user.id
      slot: user.inner.slot
      kind: user.kind
      tag: user.tags[1]
      name: user.name
      missing: user.missing
      size: len(user)
      text: str(user)
      item: user['k']
      whole: user
"""


def run(tmp_path, allow):
    prog = Program(tmp_path, PROGRAM, "targets:\n  - target: '__main__:handle'\n"
                                      f"    capture_runs_code: {str(allow).lower()}\n{CAPTURES}"
                                      "sampler: {enabled: false}\nretain: {all: true}\n")   # reads each span
    done = prog.run()
    assert done.returncode == 0, done.stderr
    (span,) = [r for r in prog.records() if r.get("name") == "__main__.handle"]
    return json.loads(done.stdout), span["attrs"], [r for r in prog.records() if r.get("code") == "capture_failed"]


def test_captures_run_no_program_code_by_default(tmp_path):
    """Plain attributes, slots, class values and list items are read; properties, __getattr__,
    __len__, __str__ and __getitem__ are never called (each such capture is skipped and reported)."""
    ran, attrs, failed = run(tmp_path, allow=False)
    assert ran == []
    assert attrs == {"id": 42, "slot": 7, "kind": "member", "tag": "b", "whole": "<User>", "text": "<User>"}
    assert len(failed) >= 1 and "property" in json.dumps(failed)


def test_capture_runs_code_when_the_target_allows_it(tmp_path):
    """``capture_runs_code: true`` evaluates with getattr, [], len and str, as before."""
    ran, attrs, _ = run(tmp_path, allow=True)
    assert set(ran) == {"property", "__getattr__", "__len__", "__str__", "__getitem__"}
    assert attrs["name"] == "from-property" and attrs["missing"] == "from-getattr"
    assert attrs["size"] == 3 and attrs["text"] == "from-str" and attrs["item"] == "from-getitem"
    assert attrs["whole"] == "from-str"
