"""Per-file table: python table.py BEFORE1.xml[,BEFORE2.xml...] AFTER1.xml[,AFTER2.xml...]
(test-seconds per file, the mean over the JUnit files of each side; tests of the last file)."""
import collections
import sys
import xml.etree.ElementTree as ET


def load(path):
    per_file = collections.defaultdict(lambda: [0, 0.0])
    for case in ET.parse(path).getroot().iter("testcase"):
        parts = case.get("classname").split(".")
        if parts[-1][:1].isupper():  # a test class
            parts = parts[:-1]
        entry = per_file["/".join(parts) + ".py"]
        entry[0] += 1
        entry[1] += float(case.get("time"))
    return per_file


def side(paths):
    runs = [load(p) for p in paths.split(",")]
    files = set().union(*runs)
    return {f: (runs[-1].get(f, [0, 0])[0], sum(r.get(f, [0, 0])[1] for r in runs) / len(runs))
            for f in files}


before, after = side(sys.argv[1]), side(sys.argv[2])
print("| file | tests | test-seconds before | after |")
print("|---|---|---|---|")
for f in sorted(set(before) | set(after), key=lambda f: -before.get(f, (0, 0))[1]):
    (n0, s0), (n1, s1) = before.get(f, (0, 0)), after.get(f, (0, 0))
    print(f"| `{f}` | {n0} → {n1} | {s0:.0f} | {s1:.0f} |")
print(f"| all | {sum(v[0] for v in before.values())} → {sum(v[0] for v in after.values())} | "
      f"{sum(v[1] for v in before.values()):.0f} | {sum(v[1] for v in after.values()):.0f} |")
