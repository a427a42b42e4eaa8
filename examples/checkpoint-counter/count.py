"""Checkpointing job: counts to 30, snapshotting every 5 steps into $SANDRUN_CHECKPOINT_DIR.

Stopped and resumed on another node (from the last snapshot) it produces the same trace root as an
uninterrupted run: results go to an output file, checkpoints are new entries named in time order.
"""

import os
import time
from pathlib import Path

ck = os.environ["SANDRUN_CHECKPOINT_DIR"]
entries = sorted(e for e in os.listdir(ck) if not e.startswith("."))
i = int(Path(ck, entries[-1]).read_text()) if entries else 0
total = 30
while i < total:
    i += 1
    time.sleep(0.1)
    if i % 5 == 0:
        tmp = os.path.join(ck, ".tmp")
        with open(tmp, "w") as f:
            f.write(str(i))
        os.rename(tmp, os.path.join(ck, f"{i:06d}"))
with open("result.txt", "w") as f:
    f.write(f"{sum(range(total + 1))}\n")
print("done", total)
