#!/usr/bin/env python3
"""Writes debian/copyright (machine-readable, DEP-5) for the patgate package.

The binary links every crate of its normal dependency tree statically, so the package's
copyright file names each one (name, version, authors, licence) and carries the text of every
licence they use. It is made from `cargo metadata` (Cargo.lock, the crates' own manifests and
licence files in cargo's registry), never by hand.

Usage: python3 debian/make-copyright.py          # writes debian/copyright
       python3 debian/make-copyright.py --check  # exits 1 when debian/copyright is stale
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "debian", "copyright")

# Where a crate keeps a licence's text, by the licence's SPDX id (the first match wins).
TEXT_FILES = {
    "MIT": ["LICENSE-MIT", "LICENSE-MIT.md", "LICENSE.MIT", "LICENSE-MIT.txt"],
    "ISC": ["LICENSE-ISC", "LICENSE.txt", "LICENSE"],
    "Zlib": ["LICENSE-ZLIB", "LICENSE-ZLIB.md", "LICENSE-Zlib", "LICENSE"],
    "BSD-1-Clause": ["LICENSE-BSD-1", "LICENSE-BSD"],
    "BSD-2-Clause": ["LICENSE-BSD", "LICENSE"],
    "BSD-3-Clause": ["LICENSE-BSD", "LICENSE"],
    "Unlicense": ["UNLICENSE"],
    "BSL-1.0": ["LICENSE-BOOST", "LICENSE-BSL"],
    "CDLA-Permissive-2.0": ["LICENSE"],
    "Unicode-3.0": ["LICENSE-UNICODE"],
}
# How each text begins, so that a file of another licence is never taken for it.
TEXT_START = {
    "MIT": "Permission is hereby granted, free of charge",
    "ISC": "Permission to use, copy, modify, and/or distribute",
    "Zlib": "This software is provided 'as-is'",
    "BSD-1-Clause": "Redistribution and use in source and binary forms",
    "BSD-2-Clause": "Redistribution and use in source and binary forms",
    "BSD-3-Clause": "Redistribution and use in source and binary forms",
    "Unlicense": "This is free and unencumbered software",
    "BSL-1.0": "Boost Software License - Version 1.0",
    "CDLA-Permissive-2.0": "Community Data License Agreement - Permissive - Version 2.0",
    "Unicode-3.0": "UNICODE LICENSE V3",
}


def metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked",
         "--filter-platform", "x86_64-unknown-linux-gnu"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def linked_crates(meta):
    """The crates of the root's normal (not dev, not build) dependency tree."""
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = meta["resolve"]["root"]
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for dep in nodes[node]["deps"]:
            if any(kind["kind"] is None for kind in dep["dep_kinds"]):
                todo.append(dep["pkg"])
    seen.discard(root)
    return packages[root], sorted((packages[i] for i in seen),
                                  key=lambda p: (p["name"], p["version"]))


def ids(expression):
    # An exception (`Apache-2.0 WITH LLVM-exception`) only adds permissions to its licence:
    # the licence's text is the one to carry.
    expression = re.sub(r"\bWITH\s+[A-Za-z0-9.\-]+", "", expression or "")
    tokens = re.findall(r"[A-Za-z0-9.\-]+", expression)
    return [t for t in tokens if t not in ("OR", "AND")]


def debian_expression(expression):
    """SPDX `A OR B`, `A/B`, `A AND B` as DEP-5 writes them: `A or B`, `A and B`."""
    spdx = " OR ".join(part.strip() for part in expression.split("/"))
    return re.sub(r"\bOR\b", "or", re.sub(r"\bAND\b", "and", re.sub(r"\bWITH\b", "with", spdx)))


def licence_text(licence, crates):
    for crate in crates:
        if licence not in ids(crate["license"]):
            continue
        folder = os.path.dirname(crate["manifest_path"])
        for name in TEXT_FILES[licence]:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            text = open(path, encoding="utf-8", errors="replace").read()
            start = text.find(TEXT_START[licence])
            if start >= 0:
                return text[start:].strip()
    sys.exit(f"make-copyright.py: no crate of the tree ships the text of {licence}")


def paragraph(text):
    """A licence text as a DEP-5 continuation: each line indented, blank lines as ` .`."""
    return "\n".join(" " + line.rstrip() if line.strip() else " ." for line in text.splitlines())


def render(meta):
    root, crates = linked_crates(meta)
    out = [
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        f"Upstream-Name: {root['name']}",
        f"Upstream-Contact: {root['authors'][0] if root['authors'] else 'the patgate developers'}",
        "Comment: The patgate binary links the Rust crates below statically. Each stanza names",
        " one crate as published on crates.io (name and version); the licence texts follow.",
        " Generated by debian/make-copyright.py from Cargo.lock; do not edit by hand.",
        "",
        "Files: *",
        "Copyright: the patgate developers",
        f"License: {debian_expression(root['license'])}",
        "",
    ]
    used = set()
    for crate in crates:
        expression = crate["license"] or "UNKNOWN"
        used.update(ids(expression))
        holders = ", ".join(a.strip() for a in crate["authors"]) or f"the {crate['name']} authors"
        out += [
            f"Files: crates.io/{crate['name']}-{crate['version']}/*",
            f"Copyright: {holders}",
            f"License: {debian_expression(expression)}",
            "",
        ]
    used.update(ids(root["license"]))
    for licence in sorted(used):
        if licence == "Apache-2.0":
            out += ["License: Apache-2.0",
                    " On Debian systems, the full text of the Apache License, Version 2.0, is in",
                    " /usr/share/common-licenses/Apache-2.0.", ""]
        elif licence in TEXT_FILES:
            out += [f"License: {licence}", paragraph(licence_text(licence, crates)), ""]
        else:
            sys.exit(f"make-copyright.py: {licence} (used by the tree) has no text source; "
                     "add it to TEXT_FILES")
    return "\n".join(out).rstrip() + "\n"


def main():
    text = render(metadata())
    if "--check" in sys.argv[1:]:
        current = open(OUT, encoding="utf-8").read() if os.path.exists(OUT) else ""
        if current != text:
            sys.exit("debian/copyright is stale: run python3 debian/make-copyright.py")
        return
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
