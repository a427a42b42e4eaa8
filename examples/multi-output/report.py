"""Several outputs in several directories: a CSV table, a text histogram and a JSON summary."""

import json
import os
import statistics

os.makedirs("out/tables", exist_ok=True)
values = [(i * 7919) % 1000 / 10 for i in range(1, 2001)]
with open("out/tables/values.csv", "w") as f:
    f.write("i,value\n")
    for i, v in enumerate(values, 1):
        f.write(f"{i},{v:.1f}\n")
bins = [0] * 10
for v in values:
    bins[min(9, int(v // 10))] += 1
with open("out/histogram.txt", "w") as f:
    for b, c in enumerate(bins):
        f.write(f"{b * 10:3d}-{b * 10 + 9:3d} {'#' * (c // 10)} {c}\n")
summary = {
    "n": len(values),
    "mean": round(statistics.fmean(values), 6),
    "median": statistics.median(values),
    "stdev": round(statistics.pstdev(values), 6),
}
with open("summary.json", "w") as f:
    json.dump(summary, f, sort_keys=True)
    f.write("\n")
print(json.dumps(summary, sort_keys=True))
