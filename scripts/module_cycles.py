#!/usr/bin/env python3
"""The module graph of a crate's top-level modules, from `crate::x` paths (also inside
`use crate::{a, b}`) outside `#[cfg(test)]` modules, `tests.rs` files and comments: prints each
module's imports, then every circle. Usage: scripts/module_cycles.py [src | channels/src]."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
mods = set()
for f in os.listdir(root):
    if f.endswith('.rs') and f not in ('lib.rs', 'main.rs'): mods.add(f[:-3])
    elif os.path.isdir(os.path.join(root, f)): mods.add(f)
def top(path):
    rel = os.path.relpath(path, root)
    return rel.split(os.sep)[0].removesuffix('.rs')
def strip_tests(text):
    # drop `#[cfg(test)] mod x { ... }` blocks by brace matching
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s*)?mod\s+\w+\s*\{', text):
        if m.start() < i: continue
        out.append(text[i:m.start()]); depth = 1; j = m.end()
        while depth and j < len(text):
            depth += {'{': 1, '}': -1}.get(text[j], 0); j += 1
        i = j
    out.append(text[i:]); return ''.join(out)
def strip_comments(text):
    return re.sub(r'//[^\n]*', '', text)
edges = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs') or f == 'tests.rs': continue
        p = os.path.join(d, f); src = top(p)
        if src in ('lib', 'main'): continue
        text = strip_comments(strip_tests(open(p).read()))
        targets = set(re.findall(r'crate::(\w+)', text))
        for g in re.findall(r'crate::\{([^}]*)\}', text):
            targets |= set(re.findall(r'(?:^|,)\s*(\w+)', g))
        for t in targets:
            if t in mods and t != src:
                edges.setdefault(src, {}).setdefault(t, os.path.relpath(p, root))
for s in sorted(edges):
    print(f"{s} -> " + ", ".join(f"{t}" for t in sorted(edges[s])))
# every elementary cycle (Johnson-lite: DFS from each start, only nodes >= start)
nodes = sorted(mods); cycles = []
def dfs(start, v, path, seen):
    for w in sorted(edges.get(v, {})):
        if w == start: cycles.append(path[:])
        elif w > start and w not in seen:
            seen.add(w); path.append(w); dfs(start, w, path, seen); path.pop(); seen.discard(w)
for s in nodes: dfs(s, s, [s], {s})
print(f"\n{len(cycles)} cycle(s)")
for c in cycles:
    hops = [f"{a} -> {b} ({edges[a][b]})" for a, b in zip(c, c[1:] + c[:1])]
    print("  " + " ; ".join(hops))
sys.exit(1 if cycles else 0)
