#!/usr/bin/env python3
"""Lists import cycles among the runtime's modules (issue 10: dependencies point one way).

A module is a file (`runtime/src/start/fork.rs` is `start::fork`, a `mod.rs` is its folder).
An edge A -> B is a path `crate::B...` or `super::...` named in A. A parent naming its own
descendants is a facade and is not counted (a `mod.rs` declares and re-exports its children);
every other edge is. Cycles are looked for at two levels: among the crate's top-level modules
(a folder and everything in it count as one), and among the modules inside each folder.
Prints each cycle with its edges; exits 1 if there is one, 0 otherwise.

    python3 .ci/cycles.py [runtime/src]
"""
import re
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runtime/src")
modules = {}
for path in sorted(root.rglob("*.rs")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    modules["::".join(parts)] = path


TOKENS = re.compile(
    r'//[^\n]*|/\*.*?\*/|r(#*)".*?"\1|b?"(?:\\.|[^"\\])*"|b?\'(?:\\.|[^\'\\])\'',
    re.S,
)


def strip(text):
    """Removes comments, strings and character literals, in one pass so that a `//` in a
    string is not taken for a comment, nor a quote in a comment for a string."""
    return TOKENS.sub(lambda m: '""' if m.group(0)[-1:] in "\"'#" else "", text)


def resolve(segments):
    """The longest known module that is a prefix of `segments`."""
    for n in range(len(segments), 0, -1):
        name = "::".join(segments[:n])
        if name in modules:
            return name
    return None


def expand_use(body):
    """Expands `a::{b, c::{d}}` into full paths (as lists of segments)."""
    body = body.strip()
    m = re.match(r"^([\w:]*?)::\{(.*)\}$", body, re.S)
    if not m:
        return [[s for s in body.split("::") if s and s != "self"]]
    prefix = [s for s in m.group(1).split("::") if s]
    out, depth, start, inner = [], 0, 0, m.group(2)
    for i, ch in enumerate(inner + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            item = inner[start:i].strip()
            start = i + 1
            if item:
                out += [prefix + rest for rest in expand_use(item.split(" as ")[0])]
    return out


edges = {name: set() for name in modules}
for name, path in modules.items():
    text = strip(path.read_text())
    here = name.split("::") if name else []
    # `mod.rs` and `lib.rs` are the module itself; other files' `super` is their folder.
    paths = []
    for body in re.findall(r"\buse\s+([^;]+);", text):
        paths += expand_use(body)
    paths += [p.split("::") for p in re.findall(r"\b(?:crate|super)(?:::\w+)+", text)]
    for segs in paths:
        if not segs:
            continue
        if segs[0] == "crate":
            target = segs[1:]
        elif segs[0] == "super":
            base = here[:]
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            target = base + segs
        else:
            continue
        dest = resolve(target)
        if dest is None or dest == name:
            continue
        # A parent naming its descendants is a facade; the crate root names everything.
        if name == "" or dest.startswith(name + "::"):
            continue
        # A module reaching its own ancestor's items (its mod.rs) counts as an edge.
        edges[name].add(dest)

def components(graph):
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


sys.setrecursionlimit(10000)

# Two levels: the crate's top-level modules (a folder counts as one module), then the modules
# inside each folder (siblings only).
top = {}
for v, targets in edges.items():
    a = v.split("::")[0]
    top.setdefault(a, set())
    for w in targets:
        b = w.split("::")[0]
        top.setdefault(b, set())
        if a != b and v:
            top[a].add(b)
graphs = [("crate", top)]
for folder in sorted({v.rsplit("::", 1)[0] for v in modules if "::" in v}):
    depth = folder.count("::") + 2
    inner = {}
    for v, targets in edges.items():
        if not v.startswith(folder + "::"):
            continue
        a = "::".join(v.split("::")[:depth])
        inner.setdefault(a, set())
        for w in targets:
            if w.startswith(folder + "::"):
                b = "::".join(w.split("::")[:depth])
                if a != b:
                    inner[a].add(b)
    graphs.append((folder, inner))

cycles = [(level, comp, graph) for level, graph in graphs for comp in components(graph)]
if not cycles:
    print(f"no import cycle among the {len(modules)} modules of {root}")
    sys.exit(0)
for level, comp, graph in cycles:
    print(f"cycle in {level}: " + ", ".join(comp))
    for v in comp:
        print(f"  {v} -> {', '.join(sorted(w for w in graph[v] if w in comp))}")
sys.exit(1)
