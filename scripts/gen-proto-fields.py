#!/usr/bin/env python3
"""Derives crates/apiserver/src/proto/fields.txt: the protobuf field numbers, names and types of
the Kubernetes API messages the lab's API server decodes (kubectl's typed clients send
`application/vnd.kubernetes.protobuf` request bodies).

Input: checkouts of github.com/kubernetes/api and github.com/kubernetes/apimachinery (their
generated.proto files and, for Go's inlined structs, types.go). Output lines:

    M <fully.qualified.Message>
    <number> <name> <o|r|m|i> <type> [<map value type>]

o = optional, p = optional and a Go pointer (a zero value was set on purpose; other zero
scalars are Go's unset fields, which JSON omits), r = repeated, m = map<string, T>, i = an inlined Go struct (its fields appear at
the parent's level in JSON). Usage: gen-proto-fields.py API_DIR APIMACHINERY_DIR > fields.txt
"""
import re
import subprocess
import sys

API_PKGS = ["core/v1", "apps/v1", "discovery/v1", "networking/v1", "coordination/v1",
            "events/v1", "autoscaling/v1", "rbac/v1", "policy/v1", "authorization/v1"]
MACH_PKGS = ["pkg/apis/meta/v1", "pkg/runtime", "pkg/util/intstr", "pkg/api/resource"]
SCALARS = {"string", "bool", "int32", "int64", "bytes", "double", "float", "uint32", "uint64",
           "fixed32", "fixed64", "sint32", "sint64"}


def git_show(repo, path):
    r = subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def inline_names(types_go):
    named = set(re.findall(r'json:"(?:,inline)?"\s+protobuf:"bytes,\d+,\w+,name=(\w+)', types_go))
    # An inlined struct without a `name=` is named after its Go type, first letter lowered.
    for t in re.findall(r'^\s*(?:\w+\.)?(\w+) `json:"(?:,inline)?"\s+protobuf:"bytes,\d+,\w+"', types_go, re.M):
        named.add(t[0].lower() + t[1:])
    return named


def pointer_fields(types_go):
    """(Go struct, protobuf field name) of every pointer field."""
    out = set()
    for m in re.finditer(r"^type (\w+) struct \{(.*?)^\}", types_go, re.M | re.S):
        for f in re.finditer(r'^\s*\w+\s+\*[\w.]+\s+`[^`]*protobuf:"\w+,\d+,\w+,name=(\w+)', m.group(2), re.M):
            out.add((m.group(1), f.group(1)))
    return out


def emit(proto, inlined, pointers):
    pkg = re.search(r"^package ([\w.]+);", proto, re.M).group(1)
    out = []
    body = re.sub(r"//[^\n]*", "", proto)
    for m in re.finditer(r"message (\w+) \{(.*?)\n\}", body, re.S):
        name, fields = m.group(1), m.group(2)
        out.append(f"M {pkg}.{name}")

        def qual(t):
            if t in SCALARS:
                return t
            return t[1:] if t.startswith(".") else f"{pkg}.{t}"

        for f in re.finditer(r"(optional|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)", fields):
            label, typ, fname, num = f.groups()
            if label == "repeated":
                lab = "r"
            elif fname in inlined:
                lab = "i"
            else:
                lab = "p" if (name, fname) in pointers else "o"
            out.append(f"{num} {fname} {lab} {qual(typ)}")
        for f in re.finditer(r"map<\s*string\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)", fields):
            typ, fname, num = f.groups()
            out.append(f"{num} {fname} m string {qual(typ)}")
    return out


def main():
    api, mach = sys.argv[1], sys.argv[2]
    lines = []
    for repo, pkgs in ((api, API_PKGS), (mach, MACH_PKGS)):
        for p in pkgs:
            proto = git_show(repo, f"{p}/generated.proto")
            if not proto:
                sys.exit(f"no {p}/generated.proto in {repo}")
            types_go = git_show(repo, f"{p}/types.go")
            lines += emit(proto, inline_names(types_go), pointer_fields(types_go))
    print("# Derived by scripts/gen-proto-fields.py from kubernetes/api and kubernetes/apimachinery.")
    print("\n".join(lines))


main()
