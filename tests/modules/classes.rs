//! Checks for the classes of defect #34 found in the cloud modules, over each install's parsed
//! HCL: a cloud module (`aws`, `gcp`, `azure`, `oci`) and every module it calls, as one graph of
//! what refers to what (references, `depends_on`, module arguments and outputs), the way
//! Terraform orders a plan. With no cloud account and no provider binary, this is what can be
//! known before an apply:
//!
//! - every use of the customer-managed key has a grant for the service principal that uses it
//!   (key policy statement, IAM binding, role assignment or OCI policy statement), and the user
//!   is created after the grant ([`KEY_USES`]); a resource that refers to the key and is not in
//!   the table fails too, so a new use of the key needs its grant named;
//! - workload identity is bound after the cluster or issuer it names ([`AFTER`]);
//! - every default-deny egress rule set lets through the paths the cluster needs: control plane,
//!   registry or mirror, identity, DNS ([`EGRESS_PATHS`], with the provider documents that name
//!   them);
//! - the port, names and annotations the module and the chart must agree on come from one
//!   input of the cloud module ([`CONTRACT`]), and the chart, rendered by `helm template` with
//!   the module's `helm_values`, says the same; the gateway's nodes carry the label
//!   `helm_values` selects and the taint it tolerates;
//! - every module call sets only inputs the module has, and every input it requires;
//! - each cloud's example (`examples/<cloud>-customer-cloud`) joins the cloud module and the
//!   chart: its values file, `yamlencode(module.meshguard.helm_values)`, rendered by
//!   `helm template` with the customer-cloud profile, carries the service account, its
//!   annotation, the egress port, the region and the allowlist.
//!
//! Each check is shown to fail on a copy of the modules with the defect put back, for every
//! cloud (the `*_fails_*` tests).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::eval::{Context, Evaluate};
use hcl::{Block, Body, Expression, Value};

use crate::{label, load, root, tools_dir};

const CLOUDS: &[&str] = &["aws", "gcp", "azure", "oci"];

// ---------------------------------------------------------------------------------------------
// An install as a graph

/// One block of an install: a resource, data source, variable, local, output, or a module call
/// (whose node stands for everything the called module creates).
#[derive(Debug)]
struct Node {
    /// `resource`, `data`, `variable`, `local`, `output` or `module`.
    kind: &'static str,
    /// The resource or data source type; for the others, the kind.
    ty: String,
    /// The module it is in (`networking/aws`) and its address there (`aws_vpc.this`).
    module: String,
    address: String,
    /// Its HCL, whitespace collapsed, for the tables' `contains`.
    text: String,
    /// Its HCL as written (a body, or a local's expression).
    raw: String,
}

/// The blocks of an install, by key (`<instance>::<address>`), and what each refers to.
#[derive(Debug, Default)]
struct Install {
    nodes: BTreeMap<String, Node>,
    edges: BTreeMap<String, BTreeSet<String>>,
    /// Module calls whose arguments are not inputs of the module, or leave a required one out.
    call_problems: Vec<String>,
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn raw_of_body(body: &Body) -> String {
    hcl::format::to_string(body).unwrap_or_default()
}

fn raw_of_expr(expr: &Expression) -> String {
    hcl::format::to_string(expr).unwrap_or_default()
}

fn text_of_expr(expr: &Expression) -> String {
    collapse(&raw_of_expr(expr))
}

fn key(instance: &str, address: &str) -> String {
    format!("{instance}::{address}")
}

fn child_instance(instance: &str, call: &str) -> String {
    if instance.is_empty() {
        format!("module.{call}")
    } else {
        format!("{instance}.module.{call}")
    }
}

/// The nodes an expression's text refers to, in `instance`, whose resources are `declared`.
fn references(text: &str, instance: &str, declared: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        let parts: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
        match parts.as_slice() {
            ["var", name, ..] => out.push(key(instance, &format!("var.{name}"))),
            ["local", name, ..] => out.push(key(instance, &format!("local.{name}"))),
            ["module", call, output, ..] => out.push(key(
                &child_instance(instance, call),
                &format!("output.{output}"),
            )),
            ["module", call] => out.push(key(instance, &format!("module.{call}"))),
            ["data", ty, name, ..] => out.push(key(instance, &format!("data.{ty}.{name}"))),
            [ty, name, ..] if declared.contains(&format!("{ty}.{name}")) => {
                out.push(key(instance, &format!("{ty}.{name}")));
            }
            _ => {}
        }
    }
    out
}

impl Install {
    /// The install whose root is `modules_dir/<cloud>`, with every module it calls by path.
    fn load(modules_dir: &Path, cloud: &str) -> Install {
        let mut install = Install::default();
        install.add(modules_dir, &modules_dir.join(cloud), cloud, "", None);
        install
    }

    fn add_node(&mut self, k: String, node: Node, refers_to: Vec<String>) {
        self.edges.entry(k.clone()).or_default().extend(refers_to);
        self.nodes.insert(k, node);
    }

    fn edge(&mut self, from: String, to: Vec<String>) {
        self.edges.entry(from).or_default().extend(to);
    }

    /// Adds the module in `dir` as `instance`; `call` is the parent's call (its arguments as
    /// (name, references) and its depends_on references), when it has a parent.
    fn add(
        &mut self,
        modules_dir: &Path,
        dir: &Path,
        name: &str,
        instance: &str,
        call: Option<Call>,
    ) {
        let m = load(dir, name);
        let declared: BTreeSet<String> = m
            .files
            .iter()
            .flat_map(|(_, b)| b.blocks())
            .filter(|b| b.identifier() == "resource")
            .map(|b| format!("{}.{}", label(b, 0), label(b, 1)))
            .collect();
        let Call {
            arguments,
            depends_on: call_depends_on,
        } = call.unwrap_or_default();
        let at = At {
            modules_dir,
            dir,
            name,
            instance,
            declared: &declared,
        };
        let mut own = Vec::new();
        for (_, body) in &m.files {
            for block in body.blocks() {
                match block.identifier() {
                    "module" => self.add_call(&at, block),
                    _ => own.extend(self.add_block(&at, block, &arguments)),
                }
            }
        }
        // A module's depends_on holds back everything in it.
        for k in own {
            self.edge(k, call_depends_on.clone());
        }
    }

    /// A resource, data source, local, output or variable of the module `at` names, as a node
    /// with the references it makes (a variable's are the parent's argument's); returns the
    /// key of a resource or data source, which the module's depends_on holds back.
    fn add_block(
        &mut self,
        at: &At<'_>,
        block: &Block,
        arguments: &BTreeMap<String, Vec<String>>,
    ) -> Option<String> {
        let node = |kind: &'static str, ty: String, address: String, raw: String| Node {
            kind,
            ty,
            module: at.name.to_owned(),
            address,
            text: collapse(&raw),
            raw,
        };
        let refs = |raw: &str| references(raw, at.instance, at.declared);
        match block.identifier() {
            kind @ ("resource" | "data") => {
                let kind = if kind == "resource" {
                    "resource"
                } else {
                    "data"
                };
                let ty = label(block, 0);
                let address = if kind == "data" {
                    format!("data.{ty}.{}", label(block, 1))
                } else {
                    format!("{ty}.{}", label(block, 1))
                };
                let raw = raw_of_body(block.body());
                let k = key(at.instance, &address);
                let refers = refs(&raw);
                self.add_node(k.clone(), node(kind, ty, address, raw), refers);
                return Some(k);
            }
            "locals" => {
                for a in block.body().attributes() {
                    let raw = raw_of_expr(a.expr());
                    let address = format!("local.{}", a.key());
                    let refers = refs(&raw);
                    self.add_node(
                        key(at.instance, &address),
                        node("local", "local".into(), address, raw),
                        refers,
                    );
                }
            }
            "output" => {
                let raw = raw_of_body(block.body());
                let address = format!("output.{}", label(block, 0));
                let refers = refs(&raw);
                self.add_node(
                    key(at.instance, &address),
                    node("output", "output".into(), address, raw),
                    refers,
                );
            }
            "variable" => {
                let var = label(block, 0);
                let address = format!("var.{var}");
                let refers = arguments.get(&var).cloned().unwrap_or_default();
                self.add_node(
                    key(at.instance, &address),
                    node(
                        "variable",
                        "variable".into(),
                        address,
                        raw_of_body(block.body()),
                    ),
                    refers,
                );
            }
            _ => {}
        }
        None
    }

    /// A module call: its arguments checked against the module's inputs, the module added as a
    /// child instance, and the call's node standing for everything the module creates.
    fn add_call(&mut self, at: &At<'_>, block: &Block) {
        let (name, instance) = (at.name, at.instance);
        let call_name = label(block, 0);
        let source = block
            .body()
            .attributes()
            .find(|a| a.key() == "source")
            .and_then(|a| match a.expr() {
                Expression::String(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let Ok(child_dir) = at.dir.join(&source).canonicalize() else {
            self.call_problems.push(format!(
                "{name}: module \"{call_name}\": source {source} is not a directory"
            ));
            return;
        };
        let child_name = child_dir
            .strip_prefix(at.modules_dir.canonicalize().unwrap())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or(source.clone());
        let mut args = BTreeMap::new();
        let mut depends_on = Vec::new();
        for a in block.body().attributes() {
            let refs = references(&text_of_expr(a.expr()), instance, at.declared);
            match a.key() {
                "source" | "providers" | "count" | "for_each" | "version" => {}
                "depends_on" => depends_on = refs,
                k => {
                    args.insert(k.to_owned(), refs);
                }
            }
        }
        self.check_call(name, &call_name, &child_dir, &child_name, &args);
        let child = child_instance(instance, &call_name);
        let address = format!("module.{call_name}");
        let raw = raw_of_body(block.body());
        self.add_node(
            key(instance, &address),
            Node {
                kind: "module",
                ty: child_name.clone(),
                module: name.to_owned(),
                address,
                text: collapse(&raw),
                raw,
            },
            Vec::new(),
        );
        self.add(
            at.modules_dir,
            &child_dir,
            &child_name,
            &child,
            Some(Call {
                arguments: args,
                depends_on,
            }),
        );
        // The call's node stands for everything the module creates.
        let created: Vec<String> = self
            .nodes
            .iter()
            .filter(|(k, n)| {
                k.starts_with(&format!("{child}::")) && ["resource", "data"].contains(&n.kind)
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.edge(key(instance, &format!("module.{call_name}")), created);
    }

    /// Arguments a call sets that the module does not take, and required inputs it leaves out.
    fn check_call(
        &mut self,
        caller: &str,
        call: &str,
        dir: &Path,
        callee: &str,
        args: &BTreeMap<String, Vec<String>>,
    ) {
        let m = load(dir, callee);
        let inputs = crate::block_names(&m, "variable");
        for a in args.keys().filter(|a| !inputs.contains(*a)) {
            self.call_problems.push(format!(
                "{caller}: module \"{call}\" sets `{a}`, which {callee} does not take"
            ));
        }
        for r in crate::required_inputs(&m)
            .iter()
            .filter(|r| !args.contains_key(*r))
        {
            self.call_problems.push(format!(
                "{caller}: module \"{call}\" leaves out {callee}'s required input `{r}`"
            ));
        }
    }

    /// Whether `to` is reached from `from` (what Terraform creates `to` before `from` for).
    fn reaches(&self, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([from.to_owned()]);
        while let Some(n) = queue.pop_front() {
            if n == to {
                return true;
            }
            if seen.insert(n.clone()) {
                queue.extend(self.edges.get(&n).into_iter().flatten().cloned());
            }
        }
        false
    }

    /// Whether resource `from` takes a value of `key` (through variables, locals and outputs,
    /// not through another resource).
    fn takes_value_of(&self, from: &str, key: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<String> = self
            .edges
            .get(from)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        while let Some(n) = queue.pop_front() {
            if n == key {
                return true;
            }
            let passes = self
                .nodes
                .get(&n)
                .is_some_and(|node| ["variable", "local", "output"].contains(&node.kind));
            if passes && seen.insert(n.clone()) {
                queue.extend(self.edges.get(&n).into_iter().flatten().cloned());
            }
        }
        false
    }

    /// The blocks a matcher finds.
    fn find<'a>(&'a self, m: &'a Matcher) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        self.nodes
            .iter()
            .filter(move |(_, n)| n.ty == m.ty && m.contains.iter().all(|c| n.text.contains(c)))
    }
}

/// Where a block is read: the modules' directory, the module's own directory, name and
/// instance, and the resources it declares.
struct At<'a> {
    modules_dir: &'a Path,
    dir: &'a Path,
    name: &'a str,
    instance: &'a str,
    declared: &'a BTreeSet<String>,
}

/// A module call as its module sees it: what each argument refers to, and what the call's
/// `depends_on` holds back everything in the module for.
#[derive(Debug, Default)]
struct Call {
    arguments: BTreeMap<String, Vec<String>>,
    depends_on: Vec<String>,
}

/// A block of type `ty` (a resource or data source type, or `variable`, `local`, `output`)
/// whose HCL, whitespace collapsed, contains every string of `contains`.
#[derive(Debug)]
struct Matcher {
    ty: &'static str,
    contains: &'static [&'static str],
}

const fn m(ty: &'static str, contains: &'static [&'static str]) -> Matcher {
    Matcher { ty, contains }
}

// ---------------------------------------------------------------------------------------------
// Class 1: every use of the customer-managed key has its grant, and comes after it

/// The customer-managed key's resource type, per cloud.
const KEY_TYPES: &[&str] = &[
    "aws_kms_key",
    "google_kms_crypto_key",
    "azurerm_key_vault_key",
    "oci_kms_key",
];

/// Blocks that name the key without encrypting with it: aliases and the grants themselves.
const NAMES_THE_KEY: &[&str] = &[
    "aws_kms_alias",
    "google_kms_crypto_key_iam_member",
    "oci_identity_policy",
];

/// A use of the key: a resource of type `user` whose HCL shows `marker`, by `principal`, which
/// needs the grant `grant` (`doc` names it) and, when `ordered`, needs it before it is created.
#[derive(Debug)]
struct KeyUse {
    user: &'static str,
    marker: &'static str,
    principal: &'static str,
    grant: Matcher,
    ordered: bool,
    doc: &'static str,
}

const KEY_USES: &[KeyUse] = &[
    // AWS: grants are statements of the key policy (part of aws_kms_key, so whatever takes the
    // key's ARN comes after them) or IAM policies the key policy lets the account grant.
    KeyUse {
        user: "aws_cloudwatch_log_group",
        marker: "kms_key_id",
        principal: "CloudWatch Logs (logs.REGION.amazonaws.com), for this account's log groups",
        grant: m(
            "aws_iam_policy_document",
            &[
                "logs.${var.region}.amazonaws.com",
                "kms:EncryptionContext:aws:logs:arn",
            ],
        ),
        ordered: true,
        doc: "Amazon CloudWatch Logs User Guide, Encrypt log data in CloudWatch Logs using AWS KMS",
    },
    KeyUse {
        user: "aws_launch_template",
        marker: "kms_key_id",
        principal: "EC2 Auto Scaling's service-linked role, which launches the nodes",
        grant: m(
            "aws_iam_policy_document",
            &[
                "AWSServiceRoleForAutoScaling",
                "kms:CreateGrant",
                "kms:GrantIsForAWSResource",
            ],
        ),
        ordered: true,
        doc: "Amazon EC2 Auto Scaling User Guide, Required AWS KMS key policy for use with encrypted volumes",
    },
    KeyUse {
        user: "aws_eks_cluster",
        marker: "encryption_config",
        principal: "the EKS cluster's IAM role",
        grant: m("aws_iam_role_policy", &["role = aws_iam_role.cluster.id"]),
        ordered: true,
        doc: "Amazon EKS User Guide, Encrypt Kubernetes secrets with AWS KMS (kms:Encrypt, kms:Decrypt, kms:ListGrants, kms:DescribeKey for the cluster role)",
    },
    KeyUse {
        user: "aws_eks_addon",
        marker: "aws-ebs-csi-driver",
        principal: "the EBS CSI controller's role, which makes the volumes of the storage class with the key",
        grant: m("aws_iam_role_policy", &["role = aws_iam_role.ebs_csi.id"]),
        ordered: true,
        doc: "Amazon EBS CSI driver, Encryption with customer-managed keys (kms:CreateGrant for AWS resources, the data-key calls)",
    },
    KeyUse {
        user: "aws_s3_bucket_server_side_encryption_configuration",
        marker: "kms_master_key_id",
        principal: "the archive's writer, the gateway's role (S3 uses the key as the caller)",
        grant: m(
            "aws_iam_policy_document",
            &["CustomerManagedKey", "kms:GenerateDataKey", "kms:Decrypt"],
        ),
        ordered: false,
        doc: "Amazon S3 User Guide, Using server-side encryption with AWS KMS keys (permissions)",
    },
    // Google Cloud: each service encrypts as its service agent, which needs the key role first.
    KeyUse {
        user: "google_container_cluster",
        marker: "database_encryption",
        principal: "the GKE service agent (service-PROJECT_NUMBER@container-engine-robot)",
        grant: m(
            "google_kms_crypto_key_iam_member",
            &[
                "container-engine-robot",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            ],
        ),
        ordered: true,
        doc: "GKE, Encrypt secrets at the application layer",
    },
    KeyUse {
        user: "google_pubsub_topic",
        marker: "kms_key_name",
        principal: "the Pub/Sub service agent (service-PROJECT_NUMBER@gcp-sa-pubsub)",
        grant: m(
            "google_kms_crypto_key_iam_member",
            &[
                "gcp-sa-pubsub",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            ],
        ),
        ordered: true,
        doc: "Pub/Sub, Configure message encryption (CMEK)",
    },
    KeyUse {
        user: "google_storage_bucket",
        marker: "default_kms_key_name",
        principal: "the Cloud Storage service agent",
        grant: m(
            "google_kms_crypto_key_iam_member",
            &[
                "google_storage_project_service_account",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            ],
        ),
        ordered: true,
        doc: "Cloud Storage, Use customer-managed encryption keys",
    },
    // Azure: role assignments on the vault, to the identity that uses the key.
    KeyUse {
        user: "azurerm_kubernetes_cluster",
        marker: "key_management_service",
        principal: "the cluster's user-assigned identity (KMS plugin)",
        grant: m(
            "azurerm_role_assignment",
            &[
                "Key Vault Crypto User",
                "azurerm_user_assigned_identity.cluster",
            ],
        ),
        ordered: true,
        doc: "AKS, Add Key Management Service etcd encryption (Key Vault Crypto User; identity set before the feature)",
    },
    KeyUse {
        user: "azurerm_kubernetes_cluster",
        marker: "key_vault_network_access = \"Private\"",
        principal: "the cluster's user-assigned identity, linking the private vault",
        grant: m(
            "azurerm_role_assignment",
            &[
                "Key Vault Contributor",
                "azurerm_user_assigned_identity.cluster",
            ],
        ),
        ordered: true,
        doc: "AKS, Add Key Management Service etcd encryption, private key vault (Key Vault Contributor)",
    },
    KeyUse {
        user: "azurerm_storage_account",
        marker: "customer_managed_key",
        principal: "the storage account's user-assigned identity",
        grant: m(
            "azurerm_role_assignment",
            &[
                "Key Vault Crypto Service Encryption User",
                "azurerm_user_assigned_identity.storage",
            ],
        ),
        ordered: true,
        doc: "Azure Storage, Configure customer-managed keys in the same tenant for an existing storage account",
    },
    KeyUse {
        user: "azurerm_key_vault_key",
        marker: "key_opts",
        principal: "whoever runs Terraform, creating the key in an RBAC vault",
        grant: m(
            "azurerm_role_assignment",
            &[
                "Key Vault Crypto Officer",
                "data.azurerm_client_config.current.object_id",
            ],
        ),
        ordered: true,
        doc: "Azure Key Vault, Provide access to keys with Azure role-based access control (Key Vault Crypto Officer)",
    },
    // OCI: policy statements; the kms module outputs key_id only after them.
    KeyUse {
        user: "oci_containerengine_cluster",
        marker: "kms_key_id",
        principal: "OKE clusters (request.principal.type = 'cluster')",
        grant: m(
            "oci_identity_policy",
            &["use keys", "request.principal.type = 'cluster'"],
        ),
        ordered: true,
        doc: "OKE, Encrypting Kubernetes Secrets at Rest in Etcd",
    },
    KeyUse {
        user: "oci_containerengine_node_pool",
        marker: "kms_key_id",
        principal: "OKE node pools (key-delegates)",
        grant: m(
            "oci_identity_policy",
            &["use key-delegates", "request.principal.type = 'nodepool'"],
        ),
        ordered: true,
        doc: "OKE, Encrypting boot volumes of worker nodes with a Vault key",
    },
    KeyUse {
        user: "oci_containerengine_node_pool",
        marker: "kms_key_id",
        principal: "Block Volume (the nodes' boot volumes)",
        grant: m("oci_identity_policy", &["service blockstorage to use keys"]),
        ordered: true,
        doc: "Block Volume, Required IAM policy for Vault keys (Allow service blockstorage to use keys)",
    },
    KeyUse {
        user: "oci_objectstorage_bucket",
        marker: "kms_key_id",
        principal: "Object Storage (objectstorage-REGION)",
        grant: m(
            "oci_identity_policy",
            &["service objectstorage-", "to use keys"],
        ),
        ordered: true,
        doc: "Object Storage, Using Your Own Keys in Vault for Server-Side Encryption",
    },
    KeyUse {
        user: "oci_streaming_stream_pool",
        marker: "custom_encryption_key",
        principal: "Streaming",
        grant: m("oci_identity_policy", &["service streaming to use keys"]),
        ordered: true,
        doc: "Streaming, Required IAM policy for a stream pool's Vault key",
    },
];

fn key_grant_problems(install: &Install) -> Vec<String> {
    let mut problems = Vec::new();
    let keys: Vec<&String> = install
        .nodes
        .iter()
        .filter(|(_, n)| n.kind == "resource" && KEY_TYPES.contains(&n.ty.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(!keys.is_empty(), "the install has no customer-managed key");
    for (k, n) in install.nodes.iter().filter(|(_, n)| n.kind == "resource") {
        let uses: Vec<&KeyUse> = KEY_USES
            .iter()
            .filter(|u| u.user == n.ty && n.text.contains(u.marker))
            .collect();
        let takes_key = keys.iter().any(|key| install.takes_value_of(k, key));
        if uses.is_empty() {
            if takes_key && !NAMES_THE_KEY.contains(&n.ty.as_str()) {
                problems.push(format!(
                    "{}: {} takes the customer-managed key, and KEY_USES names no grant for whoever uses it: add the service principal's grant and a row",
                    n.module, n.address
                ));
            }
            continue;
        }
        for u in uses {
            let grants: Vec<&String> = install.find(&u.grant).map(|(g, _)| g).collect();
            if grants.is_empty() {
                problems.push(format!(
                    "{}: {} uses the key as {}, which no grant lets use it (a {} with {:?}; {})",
                    n.module, n.address, u.principal, u.grant.ty, u.grant.contains, u.doc
                ));
            } else if u.ordered && !grants.iter().any(|g| install.reaches(k, g)) {
                let g = &install.nodes[grants[0]];
                problems.push(format!(
                    "{}: {} does not depend on {}/{}, the grant of {}: it may be created before the grant exists (add depends_on)",
                    n.module, n.address, g.module, g.address, u.principal
                ));
            }
        }
    }
    problems
}

/// Workload identity bound after what it names: (binding, what it must come after, why).
const AFTER: &[(Matcher, &str, &str)] = &[
    (
        m(
            "google_service_account_iam_member",
            &["roles/iam.workloadIdentityUser"],
        ),
        "google_container_cluster",
        "the project's workload identity pool exists once its first Workload Identity cluster does",
    ),
    (
        m("azurerm_federated_identity_credential", &[]),
        "azurerm_kubernetes_cluster",
        "the credential names the cluster's OIDC issuer",
    ),
    (
        m(
            "aws_iam_policy_document",
            &["sts:AssumeRoleWithWebIdentity"],
        ),
        "aws_iam_openid_connect_provider",
        "the role trusts the cluster's OIDC provider",
    ),
    (
        m("local", &["request.principal.type = 'workload'"]),
        "oci_containerengine_cluster",
        "the policy names the cluster's OCID",
    ),
];

fn ordering_problems(install: &Install) -> Vec<String> {
    let mut problems = Vec::new();
    for (binding, after, why) in AFTER {
        for (k, n) in install.find(binding) {
            let targets: Vec<&String> = install
                .nodes
                .iter()
                .filter(|(_, t)| t.kind == "resource" && t.ty == *after)
                .map(|(t, _)| t)
                .collect();
            if !targets.is_empty() && !targets.iter().any(|t| install.reaches(k, t)) {
                problems.push(format!(
                    "{}: {} does not depend on the {after}: {why}",
                    n.module, n.address
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Class 2: every default-deny egress rule set lets through the paths the cluster needs

/// A path a cluster needs through its default-deny egress: found when every matcher finds a
/// block in the cloud's networking module.
#[derive(Debug)]
struct EgressPath {
    cloud: &'static str,
    need: &'static str,
    through: &'static [Matcher],
    doc: &'static str,
}

/// The default-deny rule set of each cloud's networking module: the block that denies.
const DENY: &[(&str, Matcher)] = &[
    (
        "aws",
        m("aws_security_group", &["name = \"${var.name}-workloads\""]),
    ),
    (
        "gcp",
        m(
            "google_compute_firewall",
            &["direction = \"EGRESS\"", "deny {", "0.0.0.0/0"],
        ),
    ),
    (
        "azure",
        m(
            "azurerm_network_security_rule",
            &[
                "access = \"Deny\"",
                "direction = \"Outbound\"",
                "\"Internet\"",
            ],
        ),
    ),
    (
        "oci",
        m(
            "oci_core_network_security_group",
            &["display_name = \"${var.name}-workloads\""],
        ),
    ),
];

/// The paths, per cloud, with the provider documents that name them.
const EGRESS_PATHS: &[EgressPath] = &[
    // AWS: the workloads' security group (on the control plane's interfaces and every node).
    EgressPath {
        cloud: "aws",
        need: "control plane",
        through: &[
            m(
                "aws_vpc_security_group_egress_rule",
                &[
                    "security_group_id = aws_security_group.workloads.id",
                    "referenced_security_group_id = aws_security_group.workloads.id",
                ],
            ),
            m("variable", &["\"eks\"", "\"ec2\""]),
            m("aws_vpc_endpoint", &["vpc_endpoint_type = \"Interface\""]),
        ],
        doc: "Amazon EKS User Guide: security group requirements (control plane and nodes share a group); private clusters need the ec2 and eks interface endpoints",
    },
    EgressPath {
        cloud: "aws",
        need: "registry",
        through: &[
            m("variable", &["\"ecr.api\"", "\"ecr.dkr\""]),
            m("aws_vpc_endpoint", &["vpc_endpoint_type = \"Gateway\""]),
            m(
                "aws_vpc_security_group_egress_rule",
                &[
                    "prefix_list_id = aws_vpc_endpoint.s3.prefix_list_id",
                    "from_port = 443",
                ],
            ),
            m(
                "aws_vpc_security_group_egress_rule",
                &["cidr_ipv4 = var.cidr_block", "from_port = 443"],
            ),
        ],
        doc: "Amazon EKS User Guide, Deploy private clusters with limited internet access (ecr.api, ecr.dkr interface endpoints; S3 gateway endpoint for image layers)",
    },
    EgressPath {
        cloud: "aws",
        need: "identity",
        through: &[
            m("variable", &["\"sts\""]),
            m(
                "aws_vpc_security_group_egress_rule",
                &["cidr_ipv4 = var.cidr_block", "from_port = 443"],
            ),
        ],
        doc: "Amazon EKS User Guide, IAM roles for service accounts in private clusters (the sts interface endpoint)",
    },
    EgressPath {
        cloud: "aws",
        need: "DNS",
        through: &[m(
            "aws_vpc_security_group_egress_rule",
            &["from_port = 53", "to_port = 53"],
        )],
        doc: "Amazon VPC User Guide, Amazon DNS server (the VPC's base address plus two)",
    },
    // Google Cloud: the network's egress deny, priority 65000.
    EgressPath {
        cloud: "gcp",
        need: "control plane",
        through: &[m(
            "google_compute_firewall",
            &["direction = \"EGRESS\"", "var.master_cidr_block", "\"443\""],
        )],
        doc: "GKE, Automatically created firewall rules (with an egress deny, allow the control plane: TCP 443)",
    },
    EgressPath {
        cloud: "gcp",
        need: "registry",
        through: &[
            m(
                "google_compute_firewall",
                &[
                    "direction = \"EGRESS\"",
                    "local.private_googleapis",
                    "\"443\"",
                ],
            ),
            m("local", &["pkg.dev.", "gcr.io."]),
            m("google_dns_managed_zone", &["visibility = \"private\""]),
        ],
        doc: "VPC, Configure Private Google Access (private.googleapis.com, 199.36.153.8/30; DNS for gcr.io and pkg.dev)",
    },
    EgressPath {
        cloud: "gcp",
        need: "identity",
        through: &[
            m(
                "google_compute_firewall",
                &[
                    "direction = \"EGRESS\"",
                    "local.private_googleapis",
                    "\"443\"",
                ],
            ),
            m("local", &["googleapis.com."]),
        ],
        doc: "GKE, Workload Identity (sts.googleapis.com, iamcredentials.googleapis.com through Private Google Access)",
    },
    EgressPath {
        cloud: "gcp",
        need: "DNS",
        through: &[
            m("google_dns_managed_zone", &["private_visibility_config"]),
            m("google_dns_record_set", &["private.googleapis.com."]),
        ],
        doc: "VPC, Configure Private Google Access, DNS configuration (the metadata server answers DNS; firewall rules do not filter it)",
    },
    // Azure: the node subnet's security group, internet denied at 4000.
    EgressPath {
        cloud: "azure",
        need: "control plane",
        through: &[
            m(
                "azurerm_network_security_rule",
                &[
                    "direction = \"Outbound\"",
                    "access = \"Allow\"",
                    "destination_address_prefix = \"VirtualNetwork\"",
                ],
            ),
            m(
                "azurerm_subnet",
                &["Microsoft.ContainerService/managedClusters"],
            ),
        ],
        doc: "AKS, API Server VNet Integration (the API server in a delegated subnet of the cluster's network)",
    },
    EgressPath {
        cloud: "azure",
        need: "registry",
        through: &[
            m(
                "local",
                &["MicrosoftContainerRegistry", "AzureFrontDoor.FirstParty"],
            ),
            m(
                "azurerm_network_security_rule",
                &["each.value.tag", "\"443\""],
            ),
        ],
        doc: "AKS, Outbound network and FQDN rules (mcr.microsoft.com, *.data.mcr.microsoft.com: service tags MicrosoftContainerRegistry, AzureFrontDoor.FirstParty)",
    },
    EgressPath {
        cloud: "azure",
        need: "identity",
        through: &[
            m("local", &["AzureActiveDirectory", "AzureResourceManager"]),
            m(
                "azurerm_network_security_rule",
                &["each.value.tag", "\"443\""],
            ),
        ],
        doc: "AKS, Outbound network and FQDN rules (login.microsoftonline.com, management.azure.com: service tags AzureActiveDirectory, AzureResourceManager)",
    },
    EgressPath {
        cloud: "azure",
        need: "DNS",
        through: &[
            m(
                "azurerm_network_security_rule",
                &["168.63.129.16", "\"53\""],
            ),
            m("azurerm_private_dns_zone_virtual_network_link", &[]),
        ],
        doc: "Azure Virtual Network, What is IP address 168.63.129.16; Private endpoint DNS configuration",
    },
    // OCI: the workloads' network security group (API endpoint, nodes, pods); NSGs deny what
    // they do not allow.
    EgressPath {
        cloud: "oci",
        need: "control plane",
        through: &[m(
            "oci_core_network_security_group_security_rule",
            &["6443", "12250", "10250", "INGRESS"],
        )],
        doc: "OKE, Network Resource Configuration for Cluster Creation and Deployment (security rules: 6443, 12250 to the API endpoint, 10250 to the kubelets)",
    },
    EgressPath {
        cloud: "oci",
        need: "registry",
        through: &[m(
            "oci_core_network_security_group_security_rule",
            &["EGRESS", "SERVICE_CIDR_BLOCK"],
        )],
        doc: "OKE, Network Resource Configuration (worker nodes to All <region> Services In Oracle Services Network: OCIR)",
    },
    EgressPath {
        cloud: "oci",
        need: "identity",
        through: &[m(
            "oci_core_network_security_group_security_rule",
            &["EGRESS", "SERVICE_CIDR_BLOCK"],
        )],
        doc: "OKE, Workload identity (the IAM service through the service gateway)",
    },
    EgressPath {
        cloud: "oci",
        need: "DNS",
        through: &[m(
            "oci_core_network_security_group_security_rule",
            &["EGRESS", "169.254.169.254/32", "min = 53"],
        )],
        doc: "Networking, DNS in Your Virtual Cloud Network (the VCN resolver, 169.254.169.254)",
    },
];

/// What runs behind each cloud's default-deny rule set and needs its paths when it is created:
/// the nodes (and the AKS cluster, whose system pool is part of it).
const NODES: &[(&str, &str)] = &[
    ("aws", "aws_eks_node_group"),
    ("gcp", "google_container_node_pool"),
    ("azure", "azurerm_kubernetes_cluster"),
    ("azure", "azurerm_kubernetes_cluster_node_pool"),
    ("oci", "oci_containerengine_node_pool"),
];

fn egress_path_problems(install: &Install, cloud: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let networking = format!("networking/{cloud}");
    let deny = &DENY.iter().find(|(c, _)| *c == cloud).unwrap().1;
    let in_networking = |mt: &Matcher| {
        install.nodes.values().any(|n| {
            n.module == networking
                && n.ty == mt.ty
                && mt.contains.iter().all(|c| n.text.contains(c))
        })
    };
    if !in_networking(deny) {
        problems.push(format!("{networking}: no default-deny rule set ({deny:?})"));
        return problems;
    }
    let nodes: Vec<(&String, &Node)> = install
        .nodes
        .iter()
        .filter(|(_, n)| {
            n.kind == "resource" && NODES.iter().any(|(c, t)| *c == cloud && *t == n.ty)
        })
        .collect();
    for p in EGRESS_PATHS.iter().filter(|p| p.cloud == cloud) {
        for mt in p.through {
            if !in_networking(mt) {
                problems.push(format!(
                    "{networking}: the default-deny egress has no path to the {} (no {} with {:?}; {})",
                    p.need, mt.ty, mt.contains, p.doc
                ));
                continue;
            }
            // The nodes are created after the path (a rule or endpoint, not an input's default).
            let blocks: Vec<&String> = install
                .find(mt)
                .filter(|(_, n)| n.module == networking && n.kind == "resource")
                .map(|(k, _)| k)
                .collect();
            for (k, n) in &nodes {
                if !blocks.is_empty() && !blocks.iter().any(|b| install.reaches(k, b)) {
                    problems.push(format!(
                        "{}: {} does not depend on its path to the {} ({} in {networking}): it may be created before the path exists",
                        n.module, n.address, p.need, mt.ty
                    ));
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Class 3: what the module and the chart must agree on comes from one place

/// The chart the modules install.
fn chart() -> PathBuf {
    root().join("helm/meshguard-gateway")
}

/// A scalar of the chart's values.yaml at a dotted path of mapping keys (enough for the few
/// values compared here; the chart's own tests parse the whole file).
fn chart_value(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let mut want = path.split('.').peekable();
    let mut indent = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let here = line.len() - trimmed.len();
        let name = want.peek()?;
        if here == indent
            && let Some(rest) = trimmed.strip_prefix(&format!("{name}:"))
        {
            want.next();
            if want.peek().is_none() {
                let v = rest.split(" #").next().unwrap().trim();
                return Some(v.trim_matches('"').to_owned());
            }
            indent += 2;
        } else if here < indent {
            return None;
        }
    }
    None
}

/// What a module and the chart must agree on: the cloud module's input that is the one place
/// of it, the input's default, and where the chart takes it.
struct Agreement {
    input: &'static str,
    default: fn() -> String,
    chart: &'static str,
}

const SERVICE_ACCOUNT: &str = "meshguard-gateway";
const NAMESPACE: &str = "meshguard";

const CONTRACT: &[Agreement] = &[
    Agreement {
        input: "egress_proxy_port",
        default: || chart_value("egressProxy.port").expect("values.yaml sets egressProxy.port"),
        chart: "egressProxy.port (the container's and the Service's egress port)",
    },
    Agreement {
        input: "service_account",
        default: || SERVICE_ACCOUNT.to_owned(),
        chart: "serviceAccount.name, which helm_values sets (the chart would name it after the release)",
    },
    Agreement {
        input: "namespace",
        default: || NAMESPACE.to_owned(),
        chart: "the release's namespace (helm --namespace: the module's namespace output)",
    },
];

/// The workload identity annotation and pod label a cloud's chart values carry.
struct IdentityValues {
    cloud: &'static str,
    annotation: Option<&'static str>,
    label: Option<(&'static str, &'static str)>,
}

const IDENTITY_VALUES: &[IdentityValues] = &[
    IdentityValues {
        cloud: "aws",
        annotation: Some("eks.amazonaws.com/role-arn"),
        label: None,
    },
    IdentityValues {
        cloud: "gcp",
        annotation: Some("iam.gke.io/gcp-service-account"),
        label: None,
    },
    IdentityValues {
        cloud: "azure",
        annotation: Some("azure.workload.identity/client-id"),
        label: Some(("azure.workload.identity/use", "true")),
    },
    // OKE workload identity names the service account in the policy; no annotation.
    IdentityValues {
        cloud: "oci",
        annotation: None,
        label: None,
    },
];

fn default_of(node: &Node) -> Option<String> {
    let body: Body = hcl::parse(&node.raw).ok()?;
    let d = body.attributes().find(|a| a.key() == "default")?;
    Some(text_of_expr(d.expr()).trim_matches('"').to_owned())
}

fn contract_problems(install: &Install, cloud: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for a in CONTRACT {
        let want = (a.default)();
        // Every module's input of that name defaults to the chart's value.
        for n in install.nodes.values() {
            if n.kind == "variable" && n.address == format!("var.{}", a.input) {
                match default_of(n) {
                    Some(d) if d == want => {}
                    other => problems.push(format!(
                        "{}: {} defaults to {:?}, the chart's {} is {want}",
                        n.module, n.address, other, a.chart
                    )),
                }
            }
        }
        // And every module below the cloud module takes it from the cloud module's input.
        let root_var = key("", &format!("var.{}", a.input));
        if !install.nodes.contains_key(&root_var) {
            problems.push(format!(
                "{cloud}: no input `{}` (the one place of {})",
                a.input, a.chart
            ));
            continue;
        }
        for (k, n) in &install.nodes {
            if n.kind == "variable"
                && n.address == format!("var.{}", a.input)
                && *k != root_var
                && !install.reaches(k, &root_var)
            {
                problems.push(format!(
                    "{}: {} is not passed from {cloud}'s var.{}, the one place of the chart's {}",
                    n.module, n.address, a.input, a.chart
                ));
            }
        }
    }
    problems.extend(helm_values_problems(install, cloud));
    problems
}

/// The cloud module's `helm_values` output, evaluated with the inputs' defaults and a
/// placeholder for every value known only after an apply (`<module.identity.gateway_role_arn>`).
fn helm_values(install: &Install, cloud: &str) -> Result<Value, String> {
    helm_values_with(install, cloud, &hcl::Map::new())
}

/// `helm_values` with some inputs set (an example's module call), the others at their defaults.
fn helm_values_with(
    install: &Install,
    cloud: &str,
    inputs: &hcl::Map<String, Value>,
) -> Result<Value, String> {
    let out = install
        .nodes
        .get(&key("", "output.helm_values"))
        .ok_or_else(|| {
            format!("{cloud}: no helm_values output (the chart's values the install fixes)")
        })?;
    let body: Body = hcl::parse(&out.raw).map_err(|e| e.to_string())?;
    let value = body
        .attributes()
        .find(|a| a.key() == "value")
        .unwrap()
        .expr()
        .clone();
    value
        .evaluate(&root_context(install, cloud, inputs))
        .map_err(|e| format!("{cloud}: helm_values does not evaluate: {e}"))
}

/// What the cloud module's expressions see: its inputs (defaults, `inputs`, an example's
/// values for required ones), the locals that evaluate without functions, and a placeholder for
/// every output of the modules it calls.
fn root_context<'a>(
    install: &Install,
    cloud: &str,
    inputs: &hcl::Map<String, Value>,
) -> Context<'a> {
    let mut ctx = Context::new();
    let mut vars = hcl::Map::new();
    for n in install
        .nodes
        .values()
        .filter(|n| n.kind == "variable" && n.module == cloud)
    {
        let name = n.address.trim_start_matches("var.").to_owned();
        let body: Body = hcl::parse(&n.raw).unwrap();
        let v = match body.attributes().find(|a| a.key() == "default") {
            Some(d) => d.expr().evaluate(&Context::new()).unwrap_or(Value::Null),
            None => Value::String(example_input(&name)),
        };
        vars.insert(name, v);
    }
    // The examples' allowlist, so the chart's egress rules have a destination.
    vars.insert(
        "egress_cidrs".into(),
        Value::Array(vec![Value::String("198.51.100.10/32".into())]),
    );
    for (k, v) in inputs {
        vars.insert(k.clone(), v.clone());
    }
    ctx.declare_var("var", Value::Object(vars));
    // Encodings are the identity here: what is checked is what they wrap.
    for f in ["base64encode", "yamlencode", "jsonencode"] {
        ctx.declare_func(
            f,
            hcl::eval::FuncDef::builder()
                .param(hcl::eval::ParamType::Any)
                .build(|args| Ok(args[0].clone())),
        );
    }
    let mut modules: BTreeMap<String, hcl::Map<String, Value>> = BTreeMap::new();
    for k in install.nodes.keys() {
        if let Some(rest) = k.strip_prefix("module.")
            && let Some((call, output)) = rest.split_once("::output.")
            && !call.contains(".module.")
        {
            modules.entry(call.to_owned()).or_default().insert(
                output.to_owned(),
                Value::String(format!("<module.{call}.{output}>")),
            );
        }
    }
    ctx.declare_var(
        "module",
        Value::Object(
            modules
                .into_iter()
                .map(|(k, v)| (k, Value::Object(v)))
                .collect(),
        ),
    );
    // Locals in the order they evaluate (one may name another); those with other functions
    // (merge, file, regex) stay out: helm_values and the node pools use none.
    let mut locals = hcl::Map::new();
    for _ in 0..4 {
        ctx.declare_var("local", Value::Object(locals.clone()));
        for n in install
            .nodes
            .values()
            .filter(|n| n.kind == "local" && n.module == cloud)
        {
            let name = n.address.trim_start_matches("local.").to_owned();
            if locals.contains_key(&name) {
                continue;
            }
            let Ok(body) = hcl::parse(&format!("x = {}", n.raw)) else {
                continue;
            };
            if let Ok(v) = body.attributes().next().unwrap().expr().evaluate(&ctx) {
                locals.insert(name, v);
            }
        }
    }
    ctx.declare_var("local", Value::Object(locals));
    ctx
}

/// The gateway's nodes carry the label `helm_values` selects and the taint it tolerates: a
/// node resource of the cloud (each instance of a `for_each`) whose labels hold every
/// `nodeSelector` entry and whose taints hold every toleration (the chart's `NoSchedule` is the
/// providers' `NO_SCHEDULE`).
fn node_label_problems(install: &Install, cloud: &str, values: &Value) -> Vec<String> {
    let Some(Value::Object(selector)) = get(values, "nodeSelector") else {
        return Vec::new();
    };
    let tolerations = match get(values, "tolerations") {
        Some(Value::Array(t)) => t.clone(),
        _ => Vec::new(),
    };
    let root_ctx = root_context(install, cloud, &hcl::Map::new());
    let found = install.nodes.values().filter(|n| {
        n.kind == "resource"
            && n.module == cloud
            && NODES.iter().any(|(c, t)| *c == cloud && *t == n.ty)
    });
    for n in found {
        let Ok(body) = hcl::parse(&n.raw) else {
            continue;
        };
        for ctx in instances(&body, &root_ctx) {
            let (labels, taints) = labels_and_taints(cloud, &body, &ctx);
            let labelled = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            let tainted = tolerations.iter().all(|t| {
                taints.contains(&format!(
                    "{}={}:{}",
                    text(get(t, "key")),
                    text(get(t, "value")),
                    text(get(t, "effect"))
                ))
            });
            if labelled && tainted {
                return Vec::new();
            }
        }
    }
    vec![format!(
        "{cloud}: no node group carries the label helm_values selects ({selector:?}) and the taint it tolerates ({tolerations:?})"
    )]
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn attr_value(body: &Body, name: &str, ctx: &Context) -> Option<Value> {
    body.attributes()
        .find(|a| a.key() == name)
        .and_then(|a| a.expr().evaluate(ctx).ok())
}

/// A resource's evaluation contexts: one, or one per `for_each` instance (with `each`).
fn instances<'a>(body: &Body, ctx: &Context<'a>) -> Vec<Context<'a>> {
    match attr_value(body, "for_each", ctx) {
        Some(Value::Object(o)) => o
            .into_iter()
            .map(|(k, v)| {
                let mut c = ctx.clone();
                c.declare_var(
                    "each",
                    Value::Object(hcl::Map::from_iter([
                        ("key".to_owned(), Value::String(k)),
                        ("value".to_owned(), v),
                    ])),
                );
                c
            })
            .collect(),
        _ => vec![ctx.clone()],
    }
}

/// A node resource's labels, and its taints as `key=value:Effect`, where each provider keeps
/// them.
fn labels_and_taints(
    cloud: &str,
    body: &Body,
    ctx: &Context,
) -> (hcl::Map<String, Value>, Vec<String>) {
    let as_map = |v: Option<Value>| match v {
        Some(Value::Object(o)) => o,
        _ => hcl::Map::new(),
    };
    match cloud {
        "gcp" => {
            let config = body.blocks().find(|b| b.identifier() == "node_config");
            let labels = as_map(config.and_then(|c| attr_value(c.body(), "labels", ctx)));
            let taints = config
                .into_iter()
                .flat_map(|c| c.body().blocks().filter(|b| b.identifier() == "taint"))
                .map(|t| taint_of(t.body(), ctx))
                .collect();
            (labels, taints)
        }
        "azure" => {
            let labels = as_map(attr_value(body, "node_labels", ctx));
            let taints = match attr_value(body, "node_taints", ctx) {
                Some(Value::Array(t)) => t.iter().map(|v| text(Some(v))).collect(),
                _ => Vec::new(),
            };
            (labels, taints)
        }
        "oci" => {
            // initial_node_labels blocks (or a dynamic block over a map), and the kubelet's
            // --register-with-taints in the node's start-up script.
            let mut labels = hcl::Map::new();
            for b in body.blocks() {
                match (b.identifier(), label(b, 0).as_str()) {
                    ("initial_node_labels", _) => {
                        let k = attr_value(b.body(), "key", ctx);
                        let v = attr_value(b.body(), "value", ctx);
                        labels.insert(text(k.as_ref()), v.unwrap_or(Value::Null));
                    }
                    ("dynamic", "initial_node_labels") => {
                        labels.extend(as_map(attr_value(b.body(), "for_each", ctx)));
                    }
                    _ => {}
                }
            }
            let metadata = attr_value(body, "node_metadata", ctx).unwrap_or(Value::Null);
            let script = text(get(&metadata, "user_data"));
            let taints = script
                .split("--register-with-taints=")
                .skip(1)
                .flat_map(|rest| {
                    rest.split(|c: char| c == '"' || c.is_whitespace())
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            (labels, taints)
        }
        _ => {
            let labels = as_map(attr_value(body, "labels", ctx));
            let taints = body
                .blocks()
                .filter(|b| b.identifier() == "taint")
                .map(|t| taint_of(t.body(), ctx))
                .collect();
            (labels, taints)
        }
    }
}

/// A taint block as `key=value:Effect`, the effect as Kubernetes spells it.
fn taint_of(body: &Body, ctx: &Context) -> String {
    let attr = |k: &str| {
        body.attributes()
            .find(|a| a.key() == k)
            .and_then(|a| a.expr().evaluate(ctx).ok())
            .map(|v| match v {
                Value::String(s) => s,
                _ => String::new(),
            })
            .unwrap_or_default()
    };
    let effect = match attr("effect").as_str() {
        "NO_SCHEDULE" => "NoSchedule".to_owned(),
        "NO_EXECUTE" => "NoExecute".to_owned(),
        "PREFER_NO_SCHEDULE" => "PreferNoSchedule".to_owned(),
        other => other.to_owned(),
    };
    format!("{}={}:{effect}", attr("key"), attr("value"))
}

/// What an example gives a required input of a cloud module.
fn example_input(name: &str) -> String {
    match name {
        "region" => "eu-central-1".into(),
        other => format!("<{other}>"),
    }
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| match v {
        Value::Object(o) => o.get(k),
        _ => None,
    })
}

fn helm_values_problems(install: &Install, cloud: &str) -> Vec<String> {
    let values = match helm_values(install, cloud) {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let default = |input: &str| {
        install
            .nodes
            .get(&key("", &format!("var.{input}")))
            .and_then(default_of)
    };
    let port = default("egress_proxy_port");
    let sa = default("service_account");
    let as_text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if as_text(get(&values, "egressProxy.port")) != port {
        problems.push(format!(
            "{cloud}: helm_values egressProxy.port is {:?}, not var.egress_proxy_port ({port:?})",
            get(&values, "egressProxy.port")
        ));
    }
    if as_text(get(&values, "serviceAccount.name")) != sa {
        problems.push(format!(
            "{cloud}: helm_values serviceAccount.name is {:?}, not var.service_account ({sa:?})",
            get(&values, "serviceAccount.name")
        ));
    }
    let IdentityValues {
        annotation, label, ..
    } = IDENTITY_VALUES.iter().find(|i| i.cloud == cloud).unwrap();
    if let Some(annotation) = annotation {
        match get(&values, "serviceAccount.annotations") {
            Some(Value::Object(o)) if o.contains_key(*annotation) => {}
            other => problems.push(format!(
                "{cloud}: helm_values serviceAccount.annotations has no {annotation} ({other:?})"
            )),
        }
    }
    if let Some((l, v)) = label {
        match get(&values, "podLabels").and_then(|p| match p {
            Value::Object(o) => o.get(*l),
            _ => None,
        }) {
            Some(Value::String(s)) if s == v => {}
            other => problems.push(format!(
                "{cloud}: helm_values podLabels has no {l}: \"{v}\" ({other:?})"
            )),
        }
    }
    problems.extend(node_label_problems(install, cloud, &values));
    problems.extend(rendered_problems(
        &values,
        cloud,
        port,
        sa,
        *annotation,
        *label,
    ));
    problems
}

/// `helm template` of the chart's customer-cloud profile with the module's values: the
/// service account, its annotation, the pod label and the egress proxy's port as rendered.
fn rendered_problems(
    values: &Value,
    cloud: &str,
    port: Option<String>,
    sa: Option<String>,
    annotation: Option<&str>,
    label: Option<(&str, &str)>,
) -> Vec<String> {
    let rendered = match render(values) {
        Ok(r) => r,
        Err(e) => {
            return vec![format!(
                "{cloud}: helm template with helm_values fails: {e}"
            )];
        }
    };
    let mut problems = Vec::new();
    let doc = |kind: &str| {
        rendered
            .split("\n---")
            .find(|d| d.contains(&format!("\nkind: {kind}\n")))
            .unwrap_or_default()
            .to_owned()
    };
    let (port, sa) = (port.unwrap_or_default(), sa.unwrap_or_default());
    let account = doc("ServiceAccount");
    let deployment = doc("Deployment");
    let service = doc("Service");
    let mut expect = vec![
        (
            &account,
            format!("\n  name: {sa}\n"),
            "the ServiceAccount's name",
        ),
        (
            &deployment,
            format!("serviceAccountName: {sa}\n"),
            "the pods' service account",
        ),
        (
            &deployment,
            format!("- name: egress\n              containerPort: {port}\n"),
            "the container's egress port",
        ),
        (
            &service,
            format!("- name: egress\n      port: {port}\n"),
            "the Service's egress port",
        ),
    ];
    if let Some(a) = annotation {
        expect.push((
            &account,
            format!("\n    {a}: "),
            "the workload identity annotation",
        ));
    }
    if let Some((l, v)) = label {
        expect.push((
            &deployment,
            format!("{l}: \"{v}\""),
            "the workload identity pod label",
        ));
    }
    for (doc, want, what) in expect {
        if !doc.contains(&want) {
            problems.push(format!(
                "{cloud}: the rendered chart lacks {what} ({want:?})"
            ));
        }
    }
    problems
}

/// The chart rendered by `helm template` (release `mg`) with the customer-cloud profile and
/// `values`.
fn render(values: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.json");
    std::fs::write(&file, serde_json::to_string(&hcl_to_json(values)).unwrap()).unwrap();
    let out = Command::new(tools_dir().join("bin/helm"))
        .args(["template", "mg"])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "--values"])
        .arg(chart().join("values-customer-cloud.yaml"))
        .arg("--values")
        .arg(&file)
        .output()
        .map_err(|e| format!("helm runs (cargo xtask tools installs it): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn hcl_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::from_str(&n.to_string()).unwrap(),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(hcl_to_json).collect()),
        Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), hcl_to_json(v))).collect())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

fn modules_dir() -> PathBuf {
    root().join("modules")
}

/// Every class's problems in the install of `cloud` under `modules_dir`.
fn problems(modules_dir: &Path, cloud: &str) -> Vec<String> {
    let install = Install::load(modules_dir, cloud);
    let mut p = install.call_problems.clone();
    p.extend(key_grant_problems(&install));
    p.extend(ordering_problems(&install));
    p.extend(egress_path_problems(&install, cloud));
    p.extend(contract_problems(&install, cloud));
    p
}

#[test]
fn every_key_use_has_its_grant_first_every_deny_its_paths_and_the_chart_agrees() {
    let mut all = Vec::new();
    for cloud in CLOUDS {
        all.extend(problems(&modules_dir(), cloud));
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

#[test]
fn every_table_row_finds_what_it_names_in_its_clouds_modules() {
    // A row that matches nothing would check nothing: each key use has a user in some install,
    // and each egress path's blocks are where the row says.
    let installs: Vec<Install> = CLOUDS
        .iter()
        .map(|c| Install::load(&modules_dir(), c))
        .collect();
    for u in KEY_USES {
        assert!(
            installs.iter().any(|i| i
                .nodes
                .values()
                .any(|n| n.ty == u.user && n.text.contains(u.marker))),
            "KEY_USES row {} / {} finds no user",
            u.user,
            u.marker
        );
    }
    for (binding, _, _) in AFTER {
        assert!(
            installs.iter().any(|i| i.find(binding).next().is_some()),
            "AFTER row {binding:?} finds nothing"
        );
    }
    for cloud in CLOUDS {
        assert!(EGRESS_PATHS.iter().filter(|p| p.cloud == *cloud).count() >= 4);
        for need in ["control plane", "registry", "identity", "DNS"] {
            assert!(
                EGRESS_PATHS
                    .iter()
                    .any(|p| p.cloud == *cloud && p.need == need),
                "{cloud}: no {need} path in EGRESS_PATHS"
            );
        }
    }
    assert_eq!(chart_value("egressProxy.port").as_deref(), Some("3128"));
}

/// An edit's replacement that removes, from the first `from` on, the block its first `{` opens.
const REMOVE_BLOCK: &str = "\u{0}remove the block";

/// A copy of `modules/` with `edit` applied to `file` (a path under modules/): `(from, to)`
/// replaces the first `from`; `(from, REMOVE_BLOCK)` removes the block `from` starts.
fn copy_with(file: &str, edit: (&str, &str)) -> tempfile::TempDir {
    fn copy(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let p = e.unwrap().path();
            let to = dst.join(p.file_name().unwrap());
            if p.is_dir() {
                copy(&p, &to);
            } else {
                std::fs::copy(&p, &to).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&modules_dir(), dir.path());
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find(edit.0)
        .unwrap_or_else(|| panic!("{file} no longer has {:?}", edit.0));
    let edited = if edit.1 == REMOVE_BLOCK {
        let mut depth = 0;
        let mut end = start;
        for (i, c) in text[start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        format!("{}{}", &text[..start], &text[end..])
    } else {
        text.replacen(edit.0, edit.1, 1)
    };
    std::fs::write(&path, edited).unwrap();
    dir
}

/// The problems of `cloud`'s install in a copy with one edit; asserts one of them says `expect`.
fn fails(cloud: &str, file: &str, edit: (&str, &str), expect: &[&str]) {
    let dir = copy_with(file, edit);
    let p = problems(dir.path(), cloud);
    assert!(
        p.iter().any(|l| expect.iter().all(|e| l.contains(e))),
        "{cloud}, {file} edited ({:?}): no problem says {expect:?}; got:\n{}",
        edit.0,
        p.join("\n")
    );
}

#[test]
fn a_key_without_a_grant_for_its_user_fails_for_every_cloud() {
    fails(
        "aws",
        "kms/aws/main.tf",
        (
            "  statement {\n    sid       = \"CloudWatchLogs\"",
            REMOVE_BLOCK,
        ),
        &[
            "aws_cloudwatch_log_group.cluster",
            "CloudWatch Logs",
            "no grant",
        ],
    );
    fails(
        "aws",
        "kms/aws/main.tf",
        (
            "  statement {\n    sid       = \"AutoScalingGrantsForNodeVolumes\"",
            REMOVE_BLOCK,
        ),
        &["aws_launch_template.node", "Auto Scaling", "no grant"],
    );
    fails(
        "gcp",
        "siem/gcp/main.tf",
        (
            "resource \"google_kms_crypto_key_iam_member\" \"pubsub\" {",
            REMOVE_BLOCK,
        ),
        &[
            "siem/gcp",
            "google_pubsub_topic.this",
            "Pub/Sub service agent",
            "no grant",
        ],
    );
    fails(
        "azure",
        "archive/azure/main.tf",
        (
            "resource \"azurerm_role_assignment\" \"storage_key\" {",
            REMOVE_BLOCK,
        ),
        &["azurerm_storage_account.this", "no grant"],
    );
    fails(
        "oci",
        "kms/oci/main.tf",
        (
            "    \"Allow service streaming to use keys ${local.in} where ${local.where_key}\",\n",
            "",
        ),
        &["oci_streaming_stream_pool.this", "Streaming", "no grant"],
    );
    // A new use of the key with no row fails too: the class, not the instances.
    fails(
        "gcp",
        "gcp/main.tf",
        (
            "    labels          = { \"meshguard.io/role\" = \"system\" }\n",
            "    labels          = { \"meshguard.io/role\" = \"system\" }\n    boot_disk_kms_key = module.kms.key_id\n",
        ),
        &[
            "google_container_node_pool.system takes the customer-managed key",
            "KEY_USES names no grant",
        ],
    );
}

#[test]
fn nodes_created_before_their_network_paths_fail_for_every_cloud() {
    for (cloud, file, from, expect) in [
        (
            "aws",
            "networking/aws/outputs.tf",
            "    aws_vpc_endpoint.interface,\n",
            "aws_eks_node_group.gateway does not depend on its path to the control plane (aws_vpc_endpoint",
        ),
        (
            "gcp",
            "networking/gcp/outputs.tf",
            "    google_compute_firewall.control_plane,\n",
            "google_container_node_pool.gateway does not depend on its path to the control plane",
        ),
        (
            "azure",
            "networking/azure/outputs.tf",
            "    azurerm_network_security_rule.cluster,\n",
            "azurerm_kubernetes_cluster.this does not depend on its path to the registry",
        ),
        (
            "oci",
            "networking/oci/outputs.tf",
            "    oci_core_network_security_group_security_rule.workloads_control_plane,\n",
            "oci_containerengine_node_pool.this does not depend on its path to the control plane",
        ),
    ] {
        fails(cloud, file, (from, ""), &[expect]);
    }
}

#[test]
fn a_missing_ordering_fails_for_every_cloud() {
    fails(
        "aws",
        "aws/main.tf",
        ("    aws_iam_role_policy.cluster_encryption,\n", ""),
        &[
            "aws_eks_cluster.this does not depend on",
            "aws_iam_role_policy.cluster_encryption",
        ],
    );
    fails(
        "gcp",
        "gcp/main.tf",
        (
            "  depends_on = [google_kms_crypto_key_iam_member.gke_agent]\n",
            "",
        ),
        &[
            "google_container_cluster.this does not depend on",
            "gke_agent",
        ],
    );
    fails(
        "gcp",
        "gcp/main.tf",
        (
            "workload_pool   = google_container_cluster.this.workload_identity_config[0].workload_pool",
            "workload_pool   = \"${var.project_id}.svc.id.goog\"",
        ),
        &[
            "google_service_account_iam_member.workload_identity does not depend on the google_container_cluster",
        ],
    );
    fails(
        "azure",
        "azure/main.tf",
        ("    azurerm_role_assignment.cluster_key,\n", ""),
        &[
            "azurerm_kubernetes_cluster.this does not depend on",
            "cluster_key",
        ],
    );
    fails(
        "oci",
        "kms/oci/outputs.tf",
        ("  depends_on  = [oci_identity_policy.key_services]\n", ""),
        &[
            "oci_containerengine_cluster.this does not depend on",
            "key_services",
        ],
    );
}

#[test]
fn a_default_deny_egress_without_the_control_plane_path_fails_for_every_cloud() {
    fails(
        "aws",
        "networking/aws/main.tf",
        (
            "  referenced_security_group_id = aws_security_group.workloads.id\n  ip_protocol                  = \"-1\"\n  description                  = \"control plane (443) and kubelets (10250), nodes and pods of the cluster\"\n}\n\nresource \"aws_vpc_security_group_ingress_rule\"",
            "  referenced_security_group_id = aws_security_group.egress_proxy.id\n  ip_protocol                  = \"-1\"\n  description                  = \"control plane (443) and kubelets (10250), nodes and pods of the cluster\"\n}\n\nresource \"aws_vpc_security_group_ingress_rule\"",
        ),
        &["networking/aws", "no path to the control plane"],
    );
    fails(
        "gcp",
        "networking/gcp/main.tf",
        (
            "resource \"google_compute_firewall\" \"control_plane\" {",
            REMOVE_BLOCK,
        ),
        &["networking/gcp", "no path to the control plane"],
    );
    fails(
        "azure",
        "networking/azure/main.tf",
        (
            "resource \"azurerm_network_security_rule\" \"inside\" {",
            REMOVE_BLOCK,
        ),
        &["networking/azure", "no path to the control plane"],
    );
    fails(
        "oci",
        "networking/oci/main.tf",
        (
            "  for_each                  = { api = 6443, registration = 12250, kubelet = 10250 }",
            "  for_each                  = { kubelet = 10250 }",
        ),
        &["networking/oci", "no path to the control plane"],
    );
}

#[test]
fn a_port_that_disagrees_with_the_chart_fails_for_every_cloud() {
    for cloud in CLOUDS {
        // The networking module's default…
        let file = format!("networking/{cloud}/variables.tf");
        let text = std::fs::read_to_string(modules_dir().join(&file)).unwrap();
        let at = text.find("variable \"egress_proxy_port\"").unwrap();
        let old = &text[at..at + text[at..].find("\n}").unwrap()];
        let new = old.replace("default     = 3128", "default     = 3102");
        assert_ne!(old, new);
        let dir = copy_with(&file, (old, &new));
        let p = problems(dir.path(), cloud);
        assert!(
            p.iter().any(|l| l.contains(&format!("networking/{cloud}: var.egress_proxy_port defaults to Some(\"3102\"), the chart's egressProxy.port"))),
            "{cloud}: {p:?}"
        );
        // …the cloud module passing another value than its input…
        let file = format!("{cloud}/main.tf");
        let text = std::fs::read_to_string(modules_dir().join(&file)).unwrap();
        let line = text
            .lines()
            .find(|l| {
                l.trim_start().starts_with("egress_proxy_port ")
                    && l.ends_with("= var.egress_proxy_port")
            })
            .unwrap();
        let dir = copy_with(
            &file,
            (line, &line.replace("var.egress_proxy_port", "3102")),
        );
        let p = problems(dir.path(), cloud);
        assert!(
            p.iter()
                .any(|l| l.contains("var.egress_proxy_port is not passed from")),
            "{cloud}: {p:?}"
        );
        // …and the cloud module's own default, which the rendered chart then shows.
        let dir = copy_with(
            &format!("{cloud}/variables.tf"),
            (
                "  type        = number\n  default     = 3128\n",
                "  type        = number\n  default     = 3102\n",
            ),
        );
        let p = problems(dir.path(), cloud);
        assert!(
            p.iter().any(|l| l.contains(&format!(
                "{cloud}: var.egress_proxy_port defaults to Some(\"3102\")"
            ))),
            "{cloud}: {p:?}"
        );
    }
}

#[test]
fn a_service_account_or_identity_annotation_that_disagrees_fails() {
    let dir = copy_with(
        "identity/gcp/variables.tf",
        (
            "  default     = \"meshguard-gateway\"",
            "  default     = \"gateway\"",
        ),
    );
    let p = problems(dir.path(), "gcp");
    assert!(
        p.iter()
            .any(|l| l.contains("identity/gcp: var.service_account defaults to Some(\"gateway\")")),
        "{p:?}"
    );
    let dir = copy_with(
        "azure/outputs.tf",
        (
            "\"azure.workload.identity/client-id\"",
            "\"azure.workload.identity/clientid\"",
        ),
    );
    let p = problems(dir.path(), "azure");
    assert!(
        p.iter()
            .any(|l| l.contains("has no azure.workload.identity/client-id")),
        "{p:?}"
    );
    let dir = copy_with(
        "aws/outputs.tf",
        ("      name        = var.service_account\n", ""),
    );
    let p = problems(dir.path(), "aws");
    assert!(
        p.iter()
            .any(|l| l.contains("helm_values serviceAccount.name is None")),
        "{p:?}"
    );
}

#[test]
fn a_gateway_node_label_or_taint_that_disagrees_with_helm_values_fails() {
    for (cloud, from, to) in [
        (
            "aws",
            "    value  = \"gateway\"\n    effect = \"NO_SCHEDULE\"",
            "    value  = \"gatewy\"\n    effect = \"NO_SCHEDULE\"",
        ),
        (
            "gcp",
            "      value  = \"gateway\"\n      effect = \"NO_SCHEDULE\"",
            "      value  = \"gateway\"\n      effect = \"NO_EXECUTE\"",
        ),
        (
            "azure",
            "node_labels             = local.gateway_node_label",
            "node_labels             = { \"meshguard.io/role\" = \"gw\" }",
        ),
        (
            "oci",
            "  gateway_taint      = \"meshguard.io/role=gateway:NoSchedule\"",
            "  gateway_taint      = \"meshguard.io/role=gateway:NoExecute\"",
        ),
    ] {
        let dir = copy_with(&format!("{cloud}/main.tf"), (from, to));
        let p = problems(dir.path(), cloud);
        assert!(
            p.iter().any(|l| l.starts_with(&format!(
                "{cloud}: no node group carries the label helm_values selects"
            ))),
            "{cloud}: {p:?}"
        );
    }
}

#[test]
fn a_module_call_with_an_unknown_or_missing_input_fails() {
    let dir = copy_with(
        "aws/main.tf",
        ("  kms_key_arn       = module.kms.key_arn\n", ""),
    );
    let p = problems(dir.path(), "aws");
    assert!(
        p.iter().any(|l| l == "aws: module \"networking\" leaves out networking/aws's required input `kms_key_arn`"),
        "{p:?}"
    );
    let dir = copy_with(
        "oci/main.tf",
        (
            "  egress_proxy_port = var.egress_proxy_port\n",
            "  egress_proxy_prt = var.egress_proxy_port\n",
        ),
    );
    let p = problems(dir.path(), "oci");
    assert!(
        p.iter().any(|l| l == "oci: module \"networking\" sets `egress_proxy_prt`, which networking/oci does not take"),
        "{p:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item: an example per cloud joining the module and the chart

/// The examples, as the ```hcl block of their README: a `.tf` file under examples/ is
/// initialised and validated offline by the provider's acceptance tests, which have no cloud
/// provider to install.
const EXAMPLES: &[(&str, &str)] = &[
    ("aws", "examples/aws-customer-cloud"),
    ("gcp", "examples/gcp-customer-cloud"),
    ("azure", "examples/azure-customer-cloud"),
    ("oci", "examples/oci-customer-cloud"),
];

fn example_problems(cloud: &str, dir: &str, readme: &str) -> Vec<String> {
    let start = readme
        .find("```hcl\n")
        .expect("the example's README has a ```hcl block")
        + 7;
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let body: Body = hcl::parse(block).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let Some(call) = body
        .blocks()
        .find(|b| b.identifier() == "module" && label(b, 0) == "meshguard")
    else {
        return vec![format!("{dir}: no module \"meshguard\"")];
    };
    let (mut problems, inputs) = module_call_problems(cloud, dir, call);
    // The values file the example writes, from the module's helm_values.
    let install = Install::load(&modules_dir(), cloud);
    let values = match helm_values_with(&install, cloud, &inputs) {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let Some(content) = body
        .blocks()
        .find(|b| b.identifier() == "resource" && label(b, 0) == "local_file")
        .and_then(|b| b.body().attributes().find(|a| a.key() == "content"))
    else {
        return vec![format!("{dir}: no local_file writing the chart's values")];
    };
    let mut ctx = Context::new();
    ctx.declare_var(
        "module",
        Value::Object(hcl::Map::from_iter([(
            "meshguard".to_owned(),
            Value::Object(hcl::Map::from_iter([("helm_values".to_owned(), values)])),
        )])),
    );
    // YAML is a superset of JSON: the file's values are the value itself.
    ctx.declare_func(
        "yamlencode",
        hcl::eval::FuncDef::builder()
            .param(hcl::eval::ParamType::Any)
            .build(|args| Ok(args[0].clone())),
    );
    let written = match content.expr().evaluate(&ctx) {
        Ok(v) => v,
        Err(e) => {
            return vec![format!(
                "{dir}: the local_file's content does not evaluate: {e}"
            )];
        }
    };
    let default = |input: &str| {
        install
            .nodes
            .get(&key("", &format!("var.{input}")))
            .and_then(default_of)
    };
    let identity = IDENTITY_VALUES.iter().find(|i| i.cloud == cloud).unwrap();
    problems.extend(rendered_problems(
        &written,
        cloud,
        default("egress_proxy_port"),
        default("service_account"),
        identity.annotation,
        identity.label,
    ));
    let rendered = match render(&written) {
        Ok(r) => r,
        Err(e) => return vec![format!("{dir}: helm template fails: {e}")],
    };
    let Some(Value::String(region)) = inputs.get("region") else {
        return vec![format!("{dir}: no literal region")];
    };
    let mut expect = vec![
        format!("{{name: REGION, value: \"{region}\"}}"),
        format!("{{name: EGRESS_REGIONS, value: \"{region}\"}}"),
        "- ipBlock:\n            cidr: 198.51.100.10/32".to_owned(),
    ];
    expect.push("nodeSelector:\n        meshguard.io/role: gateway".to_owned());
    expect.push("key: meshguard.io/role".to_owned());
    for e in expect {
        if !rendered.contains(&e) {
            problems.push(format!("{dir}: the rendered chart lacks {e:?}"));
        }
    }
    problems
}

/// The example's call of the cloud module: its source, the inputs it sets (each one the module
/// takes) and every required one. Returns the problems and the literal inputs, which go into
/// helm_values (a `var.…` stays the module's default).
fn module_call_problems(
    cloud: &str,
    dir: &str,
    call: &Block,
) -> (Vec<String>, hcl::Map<String, Value>) {
    let mut problems = Vec::new();
    let module = load(&modules_dir().join(cloud), cloud);
    let taken = crate::block_names(&module, "variable");
    let mut inputs = hcl::Map::new();
    for a in call.body().attributes() {
        match a.key() {
            "source" => {
                if *a.expr() != Expression::String(format!("../../modules/{cloud}")) {
                    problems.push(format!("{dir}: the source is not ../../modules/{cloud}"));
                }
            }
            "providers" => {}
            k if !taken.contains(k) => {
                problems.push(format!("{dir}: sets `{k}`, which {cloud} does not take"));
            }
            k => {
                if let Ok(v) = a.expr().evaluate(&Context::new()) {
                    inputs.insert(k.to_owned(), v);
                }
            }
        }
    }
    let given: BTreeSet<String> = call
        .body()
        .attributes()
        .map(|a| a.key().to_owned())
        .collect();
    for r in crate::required_inputs(&module).difference(&given) {
        problems.push(format!("{dir}: leaves out {cloud}'s required input `{r}`"));
    }
    (problems, inputs)
}

#[test]
fn examples_join_each_cloud_module_and_the_chart() {
    let mut problems = Vec::new();
    for (cloud, dir) in EXAMPLES {
        let readme = std::fs::read_to_string(root().join(dir).join("README.md")).unwrap();
        problems.extend(example_problems(cloud, dir, &readme));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // An example that leaves out the module's identity values, or misnames an input, fails.
    let (cloud, dir) = EXAMPLES[2];
    let readme = std::fs::read_to_string(root().join(dir).join("README.md")).unwrap();
    let p = example_problems(
        cloud,
        dir,
        &readme.replace(
            "yamlencode(module.meshguard.helm_values)",
            "yamlencode({ egressProxy = module.meshguard.helm_values.egressProxy, license = module.meshguard.helm_values.license, networkPolicy = module.meshguard.helm_values.networkPolicy })",
        ),
    );
    assert!(
        p.iter()
            .any(|l| l.contains("the rendered chart lacks the workload identity annotation")),
        "{p:?}"
    );
    let p = example_problems(
        cloud,
        dir,
        &readme.replace("  egress_cidrs ", "  egress_cidr  "),
    );
    assert!(
        p.iter()
            .any(|l| l
                == "examples/azure-customer-cloud: sets `egress_cidr`, which azure does not take"),
        "{p:?}"
    );
}
