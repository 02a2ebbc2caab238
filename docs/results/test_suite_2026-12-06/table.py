import json, collections, sys
def load(p):
    f = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for l in open(p):
        r = json.loads(l); k = r['test'].split('::')[0]
        f[k][0] += 1; f[k][1] += r['wall']; f[k][2] += r.get('/jax/core/compile/backend_compile_duration', 0)
    return f
a, b = load(sys.argv[1]), load(sys.argv[2])
keys = sorted(set(a) | set(b), key=lambda k: -a.get(k, [0, 0, 0])[1])
print("| file | tests | test-seconds before | after | backend compile before | after |")
print("|---|---|---|---|---|---|")
ta = tb = ca = cb = 0
for k in keys:
    x = a.get(k, [0, 0, 0]); y = b.get(k, [0, 0, 0])
    ta += x[1]; tb += y[1]; ca += x[2]; cb += y[2]
    print(f"| `{k}` | {x[0]} → {y[0]} | {x[1]:.0f} | {y[1]:.0f} | {x[2]:.0f} | {y[2]:.0f} |")
print(f"| all | {sum(v[0] for v in a.values())} → {sum(v[0] for v in b.values())} | {ta:.0f} | {tb:.0f} | {ca:.0f} | {cb:.0f} |")
