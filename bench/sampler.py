"""A small in-process sampling profiler for one agent (py-spy is not installed here), covering every thread.

    python bench/sampler.py OUT.json GATE_PATH -m module [args...]

Runs ``module`` as ``__main__``; every ``INTERVAL_S``, while the file ``GATE_PATH`` exists, it records the stack
of each thread that is not idle (see ``IDLE_LEAVES``; a thread blocked in a C call other than those counts).
At exit OUT.json holds, per function (``file:line name``), the share of busy samples whose stack contains it
("inclusive") and the share where it is the innermost frame ("self"), plus the busy share per thread kind.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import runpy
import sys
import threading
import time

INTERVAL_S = 0.004
#: Innermost Python frames of a thread that waits (the C call it blocks in does not show): trio's loop in epoll, a
#: worker thread waiting for work, a thread waiting on a lock, a socket read, a sleep.
IDLE_LEAVES = {
    "get_events",
    "_work",
    "wait",
    "_wait_for_tstate_lock",
    "select",
    "sleep",
    "readinto",
    "recv_into",
}


def _label(code) -> str:
    return f"{os.path.relpath(code.co_filename)}:{code.co_firstlineno} {code.co_name}"


def main() -> None:
    if len(sys.argv) < 5 or sys.argv[3] != "-m":
        raise SystemExit(
            "usage: sampler.py OUT GATE -m module [args...] (a tool used by net_bench --profile)"
        )
    out, gate = sys.argv[1], sys.argv[2]
    module, sys.argv = sys.argv[4], [sys.argv[4], *sys.argv[5:]]
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    state = {"busy": 0, "ticks": 0}
    main_id = threading.main_thread().ident

    def sample() -> None:
        me = threading.get_ident()
        while True:
            time.sleep(INTERVAL_S)
            if not os.path.exists(gate):
                continue
            state["ticks"] += 1
            for tid, frame in sys._current_frames().items():
                if tid == me or frame is None:
                    continue
                if frame.f_code.co_name in IDLE_LEAVES:
                    continue
                state["busy"] += 1
                kinds["main" if tid == main_id else "worker"] += 1
                leaf[_label(frame.f_code)] += 1
                seen = set()
                f = frame
                while f is not None:
                    lab = _label(f.f_code)
                    if lab not in seen:
                        seen.add(lab)
                        inclusive[lab] += 1
                    f = f.f_back

    def dump() -> None:
        busy = max(1, state["busy"])
        data = {
            "ticks": state["ticks"],
            "busy_samples": state["busy"],
            "interval_s": INTERVAL_S,
            "threads": {k: round(v / busy, 4) for k, v in kinds.items()},
            "inclusive": [(k, round(v / busy, 4)) for k, v in inclusive.most_common(120)],
            "self": [(k, round(v / busy, 4)) for k, v in leaf.most_common(60)],
        }
        with open(out, "w") as f:
            json.dump(data, f, indent=1)

    atexit.register(dump)
    threading.Thread(target=sample, daemon=True, name="sampler").start()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
