#!/usr/bin/env python3
"""Reduce the @pulumi/oci npm package to the Terraform schema the module check needs, for the
one provider CDKTF publishes no package for (oracle/oci).

Pulumi's OCI SDK is generated from the oracle/oci Terraform provider by Pulumi's Terraform
bridge, which renames mechanically: the resource `oci_<module>_<name>` becomes the class in
`<module>/<camelName>.d.ts` configured by `<Class>Args`, data source `oci_<module>_<name>` the
function `<module>/get<Name>.d.ts` with `Get<Name>Args`, and every argument and block its
camelCase name (a block's type is an interface in `types/input.d.ts`). This script reverses
those renames. A repeatable block is named in the plural by the bridge whether or not
Terraform's name is, so both forms are accepted. What it cannot recover, it leaves out: Pulumi makes `name`-like arguments
optional (it names resources itself), so required arguments are not listed, and the few
resources the bridge renamed otherwise are mapped in ALIASES.

usage: pulumi_schema.py PACKAGE_DIR OUT.json
"""
import json
import os
import re
import sys

# Terraform names the bridge did not derive mechanically: Terraform type -> (module dir, file stem).
ALIASES = {
    "oci_sch_service_connector": ("sch", "connector"),
}

PROP = re.compile(r"^(\s*)(\w+)(\??): (.*)$")


def snake(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def kind_of(type_line):
    """An argument's Terraform type from its TypeScript declaration, coarsely: string, number,
    bool, list, map or any (`pulumi.Input<pulumi.Input<string>[]>` is a list)."""
    inner = type_line.strip().rstrip(";").replace(" | undefined", "")
    if inner.endswith("[]>") or inner.endswith("[]"):
        return "list"
    # A map's declaration opens on the argument's line and goes on over the next ones.
    if "{[key: string]" in inner or inner.endswith("<{"):
        return "map"
    for ts, tf in (("boolean", "bool"), ("number", "number"), ("string", "string")):
        if inner in (f"pulumi.Input<{ts}>", ts):
            return tf
    return "any"


def interfaces(path, indent):
    """Interfaces in a .d.ts file: {qualified name: [(prop, optional, first type line)]}."""
    out, namespace, current = {}, [], None
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if stripped.startswith("*") or stripped.startswith("/**") or stripped.startswith("*/"):
                continue
            m = re.match(r"^(\s*)export declare namespace (\w+) \{", line) or re.match(
                r"^(\s*)namespace (\w+) \{", line)
            if m:
                namespace = namespace[: len(m.group(1)) // 4] + [m.group(2)]
                continue
            m = re.match(r"^(\s*)(?:export )?interface (\w+) \{", line)
            if m:
                depth = len(m.group(1)) // 4
                current = ".".join(namespace[:depth] + [m.group(2)])
                out[current] = []
                prop_indent = len(m.group(1)) + 4
                continue
            if current is not None:
                if re.match(r"^\s*\}", line) and len(line) - len(line.lstrip()) == prop_indent - 4:
                    current = None
                    continue
                m = PROP.match(line)
                if m and len(m.group(1)) == prop_indent:
                    out[current].append((m.group(2), m.group(3) == "?", m.group(4)))
    return out


def main(package, out_path):
    inputs = interfaces(os.path.join(package, "types", "input.d.ts"), 0)
    version = json.load(open(os.path.join(package, "package.json")))["version"]

    def schema(props, depth=0):
        node = {"arguments": [], "required": [], "blocks": {}, "types": {}}
        for name, _optional, type_line in props:
            tf = snake(name)
            m = re.search(r"inputs\.([\w.]+)", type_line)
            if m and m.group(1) in inputs and depth < 12:
                node["blocks"][tf] = schema(inputs[m.group(1)], depth + 1)
                # The bridge names a repeatable block in the plural (Terraform's `filter` is
                # Pulumi's `filters`); Terraform's own name may be either.
                if tf.endswith("s") and not tf.endswith("ss"):
                    node["blocks"].setdefault(tf[:-1], node["blocks"][tf])
            else:
                node["arguments"].append(tf)
                node["types"][tf] = kind_of(type_line)
        node["arguments"].sort()
        return node

    resources, data_sources = {}, {}
    reverse = {v: k for k, v in ALIASES.items()}
    for module in sorted(os.listdir(package)):
        mdir = os.path.join(package, module)
        if not os.path.isdir(mdir) or module in ("types", "config", "node_modules", "scripts"):
            continue
        for file in sorted(os.listdir(mdir)):
            if not file.endswith(".d.ts") or file == "index.d.ts":
                continue
            stem = file[: -len(".d.ts")]
            decls = interfaces(os.path.join(mdir, file), 0)
            if stem.startswith("get") and stem[3:4].isupper():
                args = decls.get("Get" + stem[3:] + "Args")
                if args is None:
                    continue
                tf = reverse.get((module, stem), f"oci_{module}_{snake(stem[3:])}")
                data_sources[tf] = schema(args)
            else:
                cls = stem[0].upper() + stem[1:]
                args = decls.get(cls + "Args")
                if args is None:
                    continue
                tf = reverse.get((module, stem), f"oci_{module}_{snake(stem)}")
                resources[tf] = schema(args)
    if not resources:
        sys.exit(f"{package}: no resources found; is it the @pulumi/oci package?")
    with open(out_path, "w") as f:
        json.dump({"namespace": "oracle", "provider": "oci", "version": f"via @pulumi/oci {version}",
                   "package": "@pulumi/oci", "packageVersion": version, "derived": True,
                   "resources": resources, "dataSources": data_sources}, f, sort_keys=True)
    print(f"{out_path}: oracle/oci via @pulumi/oci {version}: {len(resources)} resources, "
          f"{len(data_sources)} data sources")


if __name__ == "__main__":
    main(*sys.argv[1:])
