//! The Terraform modules under `modules/`, checked with no cloud and no provider registry.
//!
//! The cloud providers' binaries cannot be installed here, so `terraform validate` cannot run on
//! the cloud modules. Instead every resource and data source, argument and block is checked
//! against the real provider's schema: CDKTF's npm packages are generated from each provider's
//! own schema, and `xtask tools` reduces them (`tests/modules/jsii_schema.py`) to
//! `provider-schemas/<provider>.json` under the tools directory. A misspelled argument, an
//! unknown block, a block written as an argument (`x = { … }`), a missing required argument or
//! a literal of a type Terraform cannot convert to the argument's (`force_destroy = "yes"`,
//! `tags = ["a"]`) fails here. The classes of defect a schema cannot show (key grants and ordering,
//! default-deny egress paths, what the modules and the chart must agree on) are in `classes`. Besides: every regional resource is
//! pinned to the module's region input, no module hard-codes a region or an account, every
//! README lists exactly its module's inputs and outputs, every `versions.tf` constrains
//! Terraform and each provider, and `terraform fmt -check` passes with the oldest Terraform a
//! module claims (1.0.3 or 1.6.6, the ones installed here) and with 1.15.5.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::{Block, Body, Expression};
use serde_json::Value;

mod classes;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn tools_dir() -> PathBuf {
    std::env::var_os("MESHGUARD_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools"))
}

/// A module: its directory and its parsed `.tf` files.
struct Module {
    name: String,
    dir: PathBuf,
    files: Vec<(String, Body)>,
}

fn load(dir: &Path, name: &str) -> Module {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tf"))
        .collect();
    entries.sort();
    for p in entries {
        let text = std::fs::read_to_string(&p).unwrap();
        let body: Body = hcl::parse(&text)
            .unwrap_or_else(|e| panic!("{} does not parse as HCL: {e}", p.display()));
        files.push((
            format!("{name}/{}", p.file_name().unwrap().to_string_lossy()),
            body,
        ));
    }
    Module {
        name: name.to_owned(),
        dir: dir.to_owned(),
        files,
    }
}

/// Every directory under `modules/` that holds `.tf` files.
fn modules() -> Vec<Module> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<Module>) {
        let mut subdirs = Vec::new();
        let mut has_tf = false;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                subdirs.push(p);
            } else if p.extension().is_some_and(|e| e == "tf") {
                has_tf = true;
            }
        }
        if has_tf {
            out.push(load(dir, rel));
        }
        subdirs.sort();
        for d in subdirs {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            walk(&d, &rel, out);
        }
    }
    let mut out = Vec::new();
    walk(&root().join("modules"), "", &mut out);
    assert!(out.len() >= 2, "modules/ holds no modules");
    out
}

/// Providers whose schema this check has; others (ours, validated for real by the provider's
/// acceptance tests) are not schema-checked here.
const SCHEMA_CHECKED: &[&str] = &["aws", "google", "azurerm", "oci"];

fn schema(provider: &str) -> Value {
    let p = tools_dir().join(format!("provider-schemas/{provider}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; `cargo xtask tools` writes the provider schemas",
            p.display()
        )
    });
    let schema: Value = serde_json::from_str(&text).unwrap();
    assert!(
        schema["resources"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r["types"].is_object()),
        "{}: reduced without argument types; `cargo xtask tools` reduces it again",
        p.display()
    );
    schema
}

const META_ARGUMENTS: &[&str] = &["count", "for_each", "depends_on", "provider"];
const META_BLOCKS: &[&str] = &["lifecycle", "provisioner", "connection"];

/// Checks one block's body against its schema node (`arguments`, `required`, `blocks`).
fn check_body(at: &str, body: &Body, node: &Value, top: bool, problems: &mut Vec<String>) {
    let arguments: BTreeSet<&str> = node["arguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let blocks = node["blocks"].as_object().unwrap();
    let mut present = BTreeSet::new();
    for attr in body.attributes() {
        let key = attr.key();
        present.insert(key.to_owned());
        if top && META_ARGUMENTS.contains(&key) {
            continue;
        }
        if !arguments.contains(key) && !blocks.contains_key(key) {
            problems.push(format!("{at}: the provider has no argument `{key}` here"));
        } else if !arguments.contains(key) {
            // `network_acls = { … }` sets nothing: Terraform wants the block.
            problems.push(format!(
                "{at}: `{key}` is a block, not an argument: write `{key} {{ … }}`"
            ));
        } else if let Some(want) = node["types"][key].as_str()
            && let Some(literal) = literal_mismatch(want, attr.expr())
        {
            problems.push(format!(
                "{at}: `{key}` takes a {want}, and {literal} is not one Terraform converts"
            ));
        }
    }
    for block in body.blocks() {
        let id = block.identifier();
        if top && META_BLOCKS.contains(&id) {
            continue;
        }
        let (name, inner) = if id == "dynamic" {
            let name = label(block, 0);
            let content = block.body().blocks().find(|b| b.identifier() == "content");
            match content {
                Some(c) => (name, c.body()),
                None => {
                    problems.push(format!("{at}: dynamic \"{name}\" has no content block"));
                    continue;
                }
            }
        } else {
            (id.to_owned(), block.body())
        };
        present.insert(name.clone());
        match blocks.get(&name) {
            Some(sub) => check_body(&format!("{at}.{name}"), inner, sub, false, problems),
            None if arguments.contains(name.as_str()) => problems.push(format!(
                "{at}: `{name}` is an argument, not a block: write `{name} = …`"
            )),
            None => problems.push(format!("{at}: the provider has no block `{name}` here")),
        }
    }
    for r in node["required"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        if r != "id" && !present.contains(r) {
            problems.push(format!("{at}: the required argument `{r}` is missing"));
        }
    }
}

/// A literal value Terraform cannot convert to the argument's type (`want`, as the reduced
/// schema names it), described; None when it converts or is not a literal (a reference, a call, a
/// template: their types are Terraform's to check at plan time).
fn literal_mismatch(want: &str, expr: &Expression) -> Option<String> {
    let shown = || hcl::format::to_string(expr).unwrap_or_default();
    let bad = match (want, expr) {
        (_, Expression::Null) => false,
        ("bool", Expression::String(s)) => s != "true" && s != "false",
        ("number", Expression::String(s)) => s.parse::<f64>().is_err(),
        ("bool", Expression::Number(_)) => true,
        ("number", Expression::Bool(_)) => true,
        ("string" | "bool" | "number", Expression::Array(_) | Expression::Object(_)) => true,
        ("list", Expression::String(_) | Expression::Number(_) | Expression::Bool(_)) => true,
        ("list", Expression::Object(_)) => true,
        ("map", Expression::String(_) | Expression::Number(_) | Expression::Bool(_)) => true,
        ("map", Expression::Array(_)) => true,
        _ => false,
    };
    bad.then(|| format!("`{}`", shown().trim()))
}

fn label(block: &Block, i: usize) -> String {
    block
        .labels()
        .get(i)
        .map(|l| l.as_str().to_owned())
        .unwrap_or_default()
}

/// Schema problems of a module's resources and data sources, and regional ones left unpinned.
fn schema_problems(m: &Module, schemas: &BTreeMap<&str, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, body) in &m.files {
        for block in body.blocks() {
            let kind = match block.identifier() {
                "resource" => "resources",
                "data" => "dataSources",
                _ => continue,
            };
            let ty = label(block, 0);
            let provider = ty.split('_').next().unwrap_or_default();
            let Some(s) = schemas.get(provider) else {
                continue;
            };
            let at = format!(
                "{file}: {}{ty}.{}",
                if kind == "dataSources" { "data." } else { "" },
                label(block, 1)
            );
            let Some(node) = s[kind].get(&ty) else {
                problems.push(format!(
                    "{at}: {provider} {} has no {} `{ty}`",
                    s["version"].as_str().unwrap_or("?"),
                    if kind == "resources" {
                        "resource type"
                    } else {
                        "data source"
                    }
                ));
                continue;
            };
            check_body(&at, block.body(), node, true, &mut problems);
            // Region pinning: a regional resource names the module's region input.
            for pin in pin_arguments(provider) {
                let regional = node["arguments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a == pin);
                if !regional {
                    continue;
                }
                let set = block.body().attributes().find(|a| a.key() == *pin);
                match set.map(|a| hcl::format::to_string(a.expr()).unwrap_or_default()) {
                    Some(e) if e.contains("var.region") => {}
                    Some(e) => problems.push(format!(
                        "{at}: {pin} = {} (the module's region input, var.region, pins every regional resource)",
                        e.trim()
                    )),
                    None => problems.push(format!(
                        "{at}: no {pin} argument: set {pin} = var.region so the resource stays in the pinned region"
                    )),
                }
            }
        }
    }
    problems
}

/// The arguments that place a provider's resource in a region.
fn pin_arguments(provider: &str) -> &'static [&'static str] {
    match provider {
        "aws" => &["region"],
        "google" => &["region", "location"],
        "azurerm" => &["location"],
        _ => &[],
    }
}

fn loaded_schemas() -> BTreeMap<&'static str, Value> {
    SCHEMA_CHECKED.iter().map(|p| (*p, schema(p))).collect()
}

#[test]
fn every_resource_argument_and_block_is_in_the_real_providers_schema() {
    let schemas = loaded_schemas();
    let mut problems = Vec::new();
    let mut checked = 0;
    for m in modules() {
        problems.extend(schema_problems(&m, &schemas));
        checked += m.files.len();
    }
    assert!(checked > 0);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A copy of the AWS archive module with one edit, and what the check says about it.
fn problems_after(edit: (&str, &str)) -> Vec<String> {
    problems_in_copy("archive/aws", edit)
}

/// A copy of `module` with one edit to its main.tf, and what the check says about it.
fn problems_in_copy(module: &str, edit: (&str, &str)) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("modules").join(module);
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let text = if p.file_name().unwrap() == "main.tf" {
            assert!(text.contains(edit.0), "main.tf no longer has {:?}", edit.0);
            text.replacen(edit.0, edit.1, 1)
        } else {
            text
        };
        std::fs::write(dir.path().join(p.file_name().unwrap()), text).unwrap();
    }
    schema_problems(&load(dir.path(), module), &loaded_schemas())
}

#[test]
fn a_misspelled_argument_an_unknown_block_or_a_missing_required_argument_fails_the_check() {
    let p = problems_after(("object_lock_enabled = true", "object_lock_enable = true"));
    assert_eq!(
        p,
        [
            "archive/aws/main.tf: aws_s3_bucket.this: the provider has no argument `object_lock_enable` here"
        ]
    );
    let p = problems_after(("versioning_configuration {", "versioning_config {"));
    assert!(
        p.iter().any(|l| l.contains(
            "aws_s3_bucket_versioning.this: the provider has no block `versioning_config`"
        )),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.contains(
            "aws_s3_bucket_versioning.this: the required argument `versioning_configuration` is missing"
        )),
        "{p:?}"
    );
    let p = problems_after(("      days = var.retention_days\n", ""));
    assert!(
        p.is_empty(),
        "days is optional (years is the alternative): {p:?}"
    );
    let p = problems_after((
        "  bucket = aws_s3_bucket.this.id\n  versioning",
        "  versioning",
    ));
    assert_eq!(
        p,
        [
            "archive/aws/main.tf: aws_s3_bucket_versioning.this: the required argument `bucket` is missing"
        ]
    );
    let p = problems_after((
        "resource \"aws_s3_bucket_policy\"",
        "resource \"aws_s3_bucket_polcy\"",
    ));
    assert!(
        p.iter()
            .any(|l| l.contains("has no resource type `aws_s3_bucket_polcy`")),
        "{p:?}"
    );
    // A block written as an argument sets nothing Terraform accepts.
    let p = problems_in_copy("kms/azure", ("  network_acls {", "  network_acls = {"));
    assert_eq!(
        p,
        [
            "kms/azure/main.tf: azurerm_key_vault.this: `network_acls` is a block, not an argument: write `network_acls { … }`"
        ]
    );
    // The other clouds' schemas catch the same.
    let p = problems_in_copy(
        "archive/gcp",
        ("uniform_bucket_level_access", "uniform_bucket_access"),
    );
    assert!(
        p.iter().any(|l| l.contains(
            "google_storage_bucket.this: the provider has no argument `uniform_bucket_access`"
        )),
        "{p:?}"
    );
    let p = problems_in_copy("archive/azure", ("min_tls_version", "minimum_tls_version"));
    assert!(
        p.iter().any(|l| l.contains(
            "azurerm_storage_account.this: the provider has no argument `minimum_tls_version`"
        )),
        "{p:?}"
    );
    let p = problems_in_copy(
        "archive/oci",
        ("time_unit   = \"DAYS\"", "time_units  = \"DAYS\""),
    );
    assert!(
        p.iter().any(|l| l.contains("oci_objectstorage_bucket.this.retention_rules.duration: the provider has no argument `time_units`")),
        "{p:?}"
    );
    let p = problems_in_copy(
        "archive/gcp",
        ("  location                    = var.region\n", ""),
    );
    assert!(
        p.iter()
            .any(|l| l.contains("google_storage_bucket.this: no location argument")),
        "{p:?}"
    );
    let p = problems_after(("  region              = var.region\n", ""));
    assert!(
        p.iter()
            .any(|l| l.contains("aws_s3_bucket.this: no region argument")),
        "{p:?}"
    );
}
/// A literal of a type Terraform cannot convert to the argument's fails the check, on every
/// cloud's schema (the types come from the providers' own schemas); one it converts does not.
#[test]
fn a_literal_of_the_wrong_type_fails_the_check_on_every_cloud() {
    for (module, edit, says) in [
        (
            "archive/aws",
            (
                "force_destroy       = false",
                "force_destroy       = \"no\"",
            ),
            "aws_s3_bucket.this: `force_destroy` takes a bool, and `\"no\"` is not one",
        ),
        (
            "archive/aws",
            (
                "tags                = var.tags",
                "tags                = [\"meshguard\"]",
            ),
            "aws_s3_bucket.this: `tags` takes a map",
        ),
        (
            "kms/gcp",
            (
                "purpose         = \"ENCRYPT_DECRYPT\"",
                "purpose         = [\"ENCRYPT_DECRYPT\"]",
            ),
            "`purpose` takes a string",
        ),
        (
            "kms/azure",
            (
                "soft_delete_retention_days    = 90",
                "soft_delete_retention_days    = true",
            ),
            "azurerm_key_vault.this: `soft_delete_retention_days` takes a number",
        ),
        (
            "archive/oci",
            (
                "freeform_tags  = var.tags",
                "freeform_tags  = \"meshguard\"",
            ),
            "oci_objectstorage_bucket.this: `freeform_tags` takes a map",
        ),
    ] {
        let p = problems_in_copy(module, edit);
        assert!(
            p.len() == 1 && p[0].contains(says),
            "{module}, {edit:?}: {p:?}"
        );
    }
    // Terraform converts these: no problem.
    for (module, edit) in [
        (
            "archive/aws",
            (
                "force_destroy       = false",
                "force_destroy       = \"false\"",
            ),
        ),
        (
            "kms/azure",
            (
                "soft_delete_retention_days    = 90",
                "soft_delete_retention_days    = \"90\"",
            ),
        ),
    ] {
        let p = problems_in_copy(module, edit);
        assert!(p.is_empty(), "{module}, {edit:?}: {p:?}");
    }
}

fn block_names<'a>(m: &'a Module, kind: &'a str) -> BTreeSet<String> {
    m.files
        .iter()
        .flat_map(|(_, b)| b.blocks())
        .filter(|b| b.identifier() == kind)
        .map(|b| label(b, 0))
        .collect()
}

/// The backticked names in the first column of the README's table whose header starts `heading`.
fn readme_table(readme: &str, heading: &str) -> Option<BTreeSet<String>> {
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with(&format!("| {heading} ")));
    lines.next()?;
    Some(
        lines
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let cell = l.trim_start_matches('|').split('|').next()?.trim();
                cell.strip_prefix('`')?.strip_suffix('`').map(str::to_owned)
            })
            .collect(),
    )
}

/// The variables of a module that have no default (a caller must set them).
fn required_inputs(m: &Module) -> BTreeSet<String> {
    m.files
        .iter()
        .flat_map(|(_, b)| b.blocks())
        .filter(|b| b.identifier() == "variable")
        .filter(|b| !b.body().attributes().any(|a| a.key() == "default"))
        .map(|b| label(b, 0))
        .collect()
}

/// Problems with the `module` call in a README's ```hcl example: arguments the module does not
/// take, required inputs left out.
fn example_problems(m: &Module, readme: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(start) = readme.find("```hcl\n") else {
        return vec![format!("{}/README.md: no ```hcl example", m.name)];
    };
    let rest = &readme[start + "```hcl\n".len()..];
    let example = &rest[..rest.find("```").unwrap_or(rest.len())];
    let body: Body = match hcl::parse(example) {
        Ok(b) => b,
        Err(e) => {
            return vec![format!(
                "{}/README.md: the example does not parse: {e}",
                m.name
            )];
        }
    };
    let Some(call) = body.blocks().find(|b| b.identifier() == "module") else {
        return vec![format!("{}/README.md: the example calls no module", m.name)];
    };
    let inputs = block_names(m, "variable");
    let given: BTreeSet<String> = call
        .body()
        .attributes()
        .map(|a| a.key().to_owned())
        .filter(|k| {
            ![
                "source",
                "version",
                "providers",
                "count",
                "for_each",
                "depends_on",
            ]
            .contains(&k.as_str())
        })
        .collect();
    for unknown in given.difference(&inputs) {
        problems.push(format!(
            "{}/README.md: the example sets `{unknown}`, which the module does not take",
            m.name
        ));
    }
    for missing in required_inputs(m).difference(&given) {
        problems.push(format!(
            "{}/README.md: the example leaves out the required input `{missing}`",
            m.name
        ));
    }
    problems
}

#[test]
fn every_module_readme_example_sets_only_its_inputs_and_every_required_one() {
    let mut problems = Vec::new();
    for m in modules() {
        match std::fs::read_to_string(m.dir.join("README.md")) {
            Ok(readme) => problems.extend(example_problems(&m, &readme)),
            Err(_) => problems.push(format!("{}: no README.md", m.name)),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And a drifted example is caught.
    let m = modules().into_iter().find(|m| m.name == "kms/aws").unwrap();
    let readme = std::fs::read_to_string(m.dir.join("README.md")).unwrap();
    let drifted = readme.replacen(
        "  region    = var.region\n",
        "  regoin    = var.region\n",
        1,
    );
    assert_ne!(drifted, readme);
    assert_eq!(
        example_problems(&m, &drifted),
        [
            "kms/aws/README.md: the example sets `regoin`, which the module does not take",
            "kms/aws/README.md: the example leaves out the required input `region`"
        ]
    );
}

#[test]
fn every_module_readme_lists_exactly_its_inputs_and_outputs() {
    let mut problems = Vec::new();
    for m in modules() {
        let readme = match std::fs::read_to_string(m.dir.join("README.md")) {
            Ok(r) => r,
            Err(_) => {
                problems.push(format!("{}: no README.md", m.name));
                continue;
            }
        };
        for (kind, heading) in [("variable", "input"), ("output", "output")] {
            let declared = block_names(&m, kind);
            match readme_table(&readme, heading) {
                None if declared.is_empty() => {}
                None => problems.push(format!(
                    "{}/README.md: no `| {heading} |` table; it must list {declared:?}",
                    m.name
                )),
                Some(listed) => {
                    for missing in declared.difference(&listed) {
                        problems.push(format!(
                            "{}/README.md: the {heading} `{missing}` is not listed",
                            m.name
                        ));
                    }
                    for gone in listed.difference(&declared) {
                        problems.push(format!(
                            "{}/README.md: lists the {heading} `{gone}`, which the module does not have",
                            m.name
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `terraform` block's `required_version` and `required_providers` of a module.
fn versions(m: &Module) -> (Option<String>, BTreeMap<String, Option<String>>) {
    let mut required_version = None;
    let mut providers = BTreeMap::new();
    for (_, body) in &m.files {
        for tf in body.blocks().filter(|b| b.identifier() == "terraform") {
            for a in tf.body().attributes() {
                if a.key() == "required_version"
                    && let Expression::String(s) = a.expr()
                {
                    required_version = Some(s.clone());
                }
            }
            for rp in tf
                .body()
                .blocks()
                .filter(|b| b.identifier() == "required_providers")
            {
                for a in rp.body().attributes() {
                    let version = match a.expr() {
                        Expression::Object(o) => o.iter().find_map(|(k, v)| {
                            let k = hcl::format::to_string(k).unwrap_or_default();
                            match (k.trim().trim_matches('"'), v) {
                                ("version", Expression::String(s)) => Some(s.clone()),
                                _ => None,
                            }
                        }),
                        _ => None,
                    };
                    providers.insert(a.key().to_owned(), version);
                }
            }
        }
    }
    (required_version, providers)
}

#[test]
fn every_module_constrains_terraform_and_each_provider_it_uses() {
    let mut problems = Vec::new();
    for m in modules() {
        let (required, providers) = versions(&m);
        if required.is_none() {
            problems.push(format!("{}: versions.tf sets no required_version", m.name));
        }
        let used: BTreeSet<String> = m
            .files
            .iter()
            .flat_map(|(_, b)| b.blocks())
            .filter(|b| ["resource", "data"].contains(&b.identifier()))
            .map(|b| label(b, 0).split('_').next().unwrap_or_default().to_owned())
            .collect();
        for p in used {
            match providers.get(&p) {
                None => problems.push(format!(
                    "{}: uses the {p} provider without naming it in required_providers",
                    m.name
                )),
                // Our own provider ships on the media beside the module, at the media's version.
                Some(None) if p != "meshguard" => problems.push(format!(
                    "{}: the {p} provider has no version constraint",
                    m.name
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Literal regions and account ids in resources, data sources, module calls, locals and
/// providers (variables' descriptions and validation messages may name examples).
#[test]
fn no_module_hard_codes_a_region_or_an_account() {
    let mut problems = Vec::new();
    for m in modules() {
        for (file, body) in &m.files {
            for block in body.blocks().filter(|b| {
                ["resource", "data", "module", "locals", "provider"].contains(&b.identifier())
            }) {
                let text = hcl::format::to_string(block.body()).unwrap();
                if let Some(r) = quoted_region(&text) {
                    problems.push(format!(
                        "{file}: {} {}: the region {r} is hard-coded; take it from var.region",
                        block.identifier(),
                        label(block, 1)
                    ));
                }
                if let Some(acct) = twelve_digits(&text) {
                    problems.push(format!(
                        "{file}: {} {}: the account id {acct} is hard-coded; use aws_caller_identity or an input",
                        block.identifier(),
                        label(block, 1)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The first quoted region name in `text`: AWS-style (`"eu-central-1"`, `"us-gov-west-1"`) or
/// Google Cloud-style (`"europe-west3"`, `"us-central1"`).
fn quoted_region(text: &str) -> Option<String> {
    const PREFIXES: &[&str] = &["af", "ap", "ca", "eu", "il", "me", "mx", "sa", "us"];
    const GCP_PREFIXES: &[&str] = &[
        "africa",
        "asia",
        "australia",
        "europe",
        "me",
        "northamerica",
        "southamerica",
        "us",
    ];
    for quoted in text.split('"').skip(1).step_by(2) {
        if let Some((prefix, area)) = quoted.split_once('-')
            && GCP_PREFIXES.contains(&prefix)
            && area.ends_with(|c: char| c.is_ascii_digit())
            && area
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .bytes()
                .all(|b| b.is_ascii_lowercase())
            && area.len() > 1
        {
            return Some(format!("\"{quoted}\""));
        }
        let parts: Vec<&str> = quoted.split('-').collect();
        let (prefix, area, n) = match parts.as_slice() {
            [p, "gov", area, n] | [p, area, n] => (*p, *area, *n),
            _ => continue,
        };
        if PREFIXES.contains(&prefix)
            && !area.is_empty()
            && area.bytes().all(|b| b.is_ascii_lowercase())
            && n.len() == 1
            && n.bytes().all(|b| b.is_ascii_digit())
        {
            return Some(format!("\"{quoted}\""));
        }
    }
    None
}

fn twelve_digits(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 12)
        .map(str::to_owned)
}

/// The oldest Terraform version a `>= X.Y.Z` constraint allows.
fn oldest(constraint: &str) -> Option<(u32, u32, u32)> {
    let v = constraint
        .split(',')
        .find_map(|c| c.trim().strip_prefix(">="))?
        .trim();
    let mut n = v.split('.').map(|p| p.parse().ok());
    Some((
        n.next()??,
        n.next().flatten().unwrap_or(0),
        n.next().flatten().unwrap_or(0),
    ))
}

#[test]
fn every_module_is_formatted_for_the_oldest_terraform_it_claims_and_for_1_15() {
    let mut problems = Vec::new();
    for m in modules() {
        let (required, _) = versions(&m);
        let mut terraforms = vec!["terraform"];
        // The oldest Terraform a module claims, where it is one installed here (1.0.3, 1.6.6).
        match required.as_deref().and_then(oldest) {
            Some(v) if v <= (1, 0, 3) => terraforms.push("terraform-1.0.3"),
            Some(v) if v <= (1, 6, 6) => terraforms.push("terraform-1.6.6"),
            _ => {}
        }
        for tf in terraforms {
            let out = Command::new(tf)
                .args(["fmt", "-check", "-diff", "-no-color"])
                .current_dir(&m.dir)
                .env("CHECKPOINT_DISABLE", "1")
                .output()
                .unwrap_or_else(|e| panic!("{tf} runs (cargo xtask tools installs it): {e}"));
            if !out.status.success() {
                problems.push(format!(
                    "{}: `{tf} fmt -check` fails:\n{}{}",
                    m.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_region_and_account_checks_catch_what_they_look_for() {
    assert_eq!(
        quoted_region(r#"region = "eu-central-1""#).as_deref(),
        Some("\"eu-central-1\"")
    );
    assert_eq!(
        quoted_region(r#"r = "us-gov-west-1""#).as_deref(),
        Some("\"us-gov-west-1\"")
    );
    assert_eq!(quoted_region(r#"r = var.region, n = "eu-west""#), None);
    assert_eq!(
        quoted_region(r#"location = "europe-west3""#).as_deref(),
        Some("\"europe-west3\"")
    );
    assert_eq!(quoted_region(r#"n = "meshguard-gateway""#), None);
    assert_eq!(
        twelve_digits("arn:aws:iam::123456789012:root").as_deref(),
        Some("123456789012")
    );
    assert_eq!(twelve_digits("retention 2190"), None);
    assert_eq!(oldest(">= 1.0.3"), Some((1, 0, 3)));
    assert_eq!(oldest(">= 1.3.0, < 2.0"), Some((1, 3, 0)));
}
