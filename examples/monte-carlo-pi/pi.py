"""Seeded Monte Carlo estimate of pi: the same bytes on every executor, so k=3 runs cross-verify."""

import json
import random

rng = random.Random(20240607)
n = 400_000
inside = sum(1 for _ in range(n) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
est = 4 * inside / n
with open("pi.json", "w") as f:
    json.dump({"samples": n, "inside": inside, "pi": est}, f, sort_keys=True)
    f.write("\n")
print(f"pi ~ {est:.6f} from {n} seeded samples")
