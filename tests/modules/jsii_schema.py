#!/usr/bin/env python3
"""Reduce a CDKTF provider package's jsii assembly (`.jsii`) to the Terraform schema our module
check needs: for every resource and data source type, its argument names with their types (coarsely:
string, number, bool, list, map), and its nested blocks.

CDKTF generates these packages from the provider's own schema (`terraform providers schema
-json`): each resource is a class whose doc links `…/docs/resources/<name> <type>`, configured by
an interface `<Class>Config` with one property per argument or block; each property's doc links
the argument's Terraform name (`…#<name> <Class>#<name>`), and a block's type is a struct of the
same assembly.

usage: jsii_schema.py PACKAGE/.jsii OUT.json
"""
import json
import re
import sys

CLASS = re.compile(
    r"registry\.terraform\.io/providers/([\w-]+)/([\w-]+)/([\d.]+)/docs/(resources|data-sources)/\w+ (\w+)\}"
)
ANCHOR = re.compile(r"#(\w+) \w+#\w+\}")


def snake(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def kind_of(t):
    """An argument's Terraform type, coarsely: string, number, bool, list, map or any. A union is
    the type with `IResolvable` (any expression) beside it: its first other member."""
    primitive = t.get("primitive")
    if primitive:
        return {"string": "string", "number": "number", "boolean": "bool"}.get(primitive, "any")
    coll = t.get("collection")
    if coll:
        return "list" if coll["kind"] == "array" else "map"
    union = t.get("union")
    if union:
        kinds = [kind_of(u) for u in union["types"] if u.get("fqn") != "cdktf.IResolvable"]
        return kinds[0] if kinds else "any"
    return "any"


def main(src, out):
    with open(src) as f:
        assembly = json.load(f)
    types = assembly["types"]
    meta = {}

    def struct_of(t):
        """The struct a property's type names (a block, or an object-typed argument), if any."""
        if "fqn" in t and types.get(t["fqn"], {}).get("datatype"):
            return t["fqn"]
        coll = t.get("collection")
        if coll:
            return struct_of(coll["elementtype"])
        union = t.get("union")
        if union:
            for u in union["types"]:
                s = struct_of(u)
                if s:
                    return s
        return None

    def schema(fqn, depth=0):
        t = types[fqn]
        out = {"arguments": [], "required": [], "blocks": {}, "types": {}}
        for p in t.get("properties", []):
            docs = json.dumps(p.get("docs", {}))
            m = ANCHOR.search(docs)
            name = m.group(1) if m else snake(p["name"])
            struct = struct_of(p["type"])
            if struct and depth < 12:
                out["blocks"][name] = schema(struct, depth + 1)
            else:
                out["arguments"].append(name)
                out["types"][name] = kind_of(p["type"])
            if not p.get("optional"):
                out["required"].append(name)
        out["arguments"].sort()
        out["required"].sort()
        return out

    resources, data_sources = {}, {}
    for fqn, t in types.items():
        if t.get("kind") != "class":
            continue
        m = CLASS.search(t.get("docs", {}).get("summary", ""))
        config = fqn + "Config"
        if not m or config not in types:
            continue
        meta = {"namespace": m.group(1), "provider": m.group(2), "version": m.group(3)}
        target = resources if m.group(4) == "resources" else data_sources
        target[m.group(5)] = schema(config)
    if not resources:
        sys.exit(f"{src}: no Terraform resources found; is it a CDKTF provider package?")
    with open(out, "w") as f:
        json.dump(
            {**meta, "package": assembly["name"], "packageVersion": assembly["version"],
             "resources": resources, "dataSources": data_sources},
            f, sort_keys=True)
    print(f"{out}: {meta['namespace']}/{meta['provider']} {meta['version']}: "
          f"{len(resources)} resources, {len(data_sources)} data sources")


if __name__ == "__main__":
    main(*sys.argv[1:])
