//! A registry as sites run it: distribution with htpasswd users behind TLS from a private CA
//! (made by openssl here). Media are made from it and imported into it with the credentials
//! `podman login` writes (an auth file) and the site CA (`--ca-bundle`); a missing credential,
//! a wrong password and an unknown CA are each refused with what to do.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;

use crate::support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.pem`/`ca.key` and the registry's `registry.pem`/`registry.key` for 127.0.0.1.
fn pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=site-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut leaf = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=registry",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ];
    leaf.extend(ec);
    leaf.extend(["-keyout", "registry.key", "-out", "registry.pem"]);
    openssl(dir, &leaf);
}

/// An auth file as `podman login` writes it.
fn auth_file(path: &Path, registry: &str, user: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        path,
        serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string(),
    )
    .unwrap();
}

/// meshguard-bundle with a clean credential environment: no auth file but what `env` names.
fn bundle_as(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(bundle_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
        .env("HOME", cwd.join("home"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("meshguard-bundle runs")
}

/// skopeo's certificate directory (the site CA as `ca.crt`).
fn cert_dir(dir: &Path) -> String {
    let certs = dir.join("certs");
    if !certs.exists() {
        std::fs::create_dir(&certs).unwrap();
        std::fs::copy(dir.join("ca.pem"), certs.join("ca.crt")).unwrap();
    }
    certs.display().to_string()
}

/// Puts a source image holding `content` into `reg` with skopeo (as user `mirror`), writes the
/// auth files `auth.json` (right password) and `wrong.json`, and returns a media manifest that
/// takes the image as `meshguard/app:MAJOR`.
fn seed(dir: &Path, reg: &Registry, major: &str, content: &[u8]) -> std::path::PathBuf {
    umoci_image(&dir.join("layout"), "v1", &[("srv/app", content)]);
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                &format!("--dest-cert-dir={}", cert_dir(dir)),
                "--dest-creds=mirror:s3cret-pass",
            ])
            .arg(format!("oci:{}:v1", dir.join("layout").display()))
            .arg(format!("docker://{}/src/app:v1", reg.addr)),
    );
    auth_file(&dir.join("auth.json"), &reg.addr, "mirror", "s3cret-pass");
    auth_file(
        &dir.join("wrong.json"),
        &reg.addr,
        "mirror",
        "not-the-password",
    );
    manifest(
        dir,
        &format!("{major}.0.0"),
        &format!(
            "images:\n  - ref: meshguard/app:{major}\n    from: docker://{}/src/app:v1\n",
            reg.addr
        ),
    )
}

/// What the registry holds as `meshguard/app:MAJOR`, read back by skopeo, is the image the
/// media `m` carry.
fn assert_registry_holds_the_media_image(dir: &Path, reg: &Registry, major: &str) {
    let inspect = run_ok(
        Command::new("skopeo")
            .args([
                "inspect",
                &format!("--cert-dir={}", cert_dir(dir)),
                "--creds=mirror:s3cret-pass",
            ])
            .arg(format!("docker://{}/meshguard/app:{major}", reg.addr)),
    );
    let pushed: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let media: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("m/MEDIA.json")).unwrap()).unwrap();
    let carried = media["images"][0]["digest"].as_str().unwrap();
    assert!(carried.starts_with("sha256:"), "{media}");
    assert_eq!(pushed["Digest"].as_str(), Some(carried));
}

#[test]
fn media_are_made_from_and_imported_into_a_registry_with_htpasswd_users_behind_a_private_ca() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let reg = htpasswd_registry_behind_the_site_ca(dir);
    let man = seed(dir, &reg, "8", b"behind the site CA\n");
    // Pull: credentials and the site CA are both needed, and each is named when missing.
    a_pull_names_what_it_lacks(dir, &man);
    ok(
        create_from(
            dir,
            &man,
            &["--ca-bundle", "ca.pem", "--authfile", "auth.json"],
            &[],
        ),
        "create with the auth file and the CA",
    );
    let pubkey = keys().ed_public();
    ok(bundle(&["verify", "m", "--pubkey", &pubkey], dir), "verify");
    // Push: the auth file found through REGISTRY_AUTH_FILE, as podman and skopeo find it.
    a_push_names_what_it_lacks(dir, &reg);
    let auth = dir.join("auth.json");
    ok(
        import_into(
            dir,
            &reg,
            &[("REGISTRY_AUTH_FILE", &auth)],
            &["--ca-bundle", "ca.pem"],
        ),
        "import with credentials and the CA",
    );
    assert_registry_holds_the_media_image(dir, &reg, "8");
}

/// A registry with the htpasswd user `mirror`, serving TLS from the site CA made in `dir`.
fn htpasswd_registry_behind_the_site_ca(dir: &Path) -> Registry {
    std::fs::create_dir(dir.join("home")).unwrap();
    pki(dir);
    let htpasswd = run_ok(Command::new("htpasswd").args(["-Bbn", "mirror", "s3cret-pass"]));
    std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
    Registry::start_secured(
        &dir.join("htpasswd"),
        &dir.join("registry.pem"),
        &dir.join("registry.key"),
        &dir.join("ca.pem"),
    )
}

/// `create` of the media `m` from the manifest `man`, with `extra` arguments and `env`.
fn create_from(dir: &Path, man: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Output {
    let key = keys().ed_secret();
    let mut args = vec![
        "create",
        "--manifest",
        man.to_str().unwrap(),
        "--out",
        "m",
        "--key",
        &key,
    ];
    args.extend(extra);
    bundle_as(&args, dir, env)
}

/// `import` of the media `m` into `reg`, with `env` and `extra` arguments.
fn import_into(dir: &Path, reg: &Registry, env: &[(&str, &Path)], extra: &[&str]) -> Output {
    let pubkey = keys().ed_public();
    let mut args = vec![
        "import",
        "m",
        "--pubkey",
        &pubkey,
        "--registry",
        &reg.addr,
        "--dest",
        "site",
    ];
    args.extend(extra);
    bundle_as(&args, dir, env)
}

/// Without credentials, and without the site CA, `create` fails naming what to give it, and
/// leaves no media looking complete.
fn a_pull_names_what_it_lacks(dir: &Path, man: &Path) {
    let err = fails(
        create_from(dir, man, &["--ca-bundle", "ca.pem"], &[]),
        "create without credentials",
    );
    assert!(
        err.contains("wants credentials") && err.contains("REGISTRY_AUTH_FILE"),
        "{err}"
    );
    let err = fails(
        create_from(dir, man, &["--authfile", "auth.json"], &[]),
        "create without the site CA",
    );
    assert!(
        err.contains("--ca-bundle"),
        "the unknown CA is named: {err}"
    );
    assert!(!dir.join("m").exists(), "no media is left looking complete");
}

/// Without credentials, with a wrong password (never printed), and without the site CA,
/// `import` fails naming what to do.
fn a_push_names_what_it_lacks(dir: &Path, reg: &Registry) {
    let err = fails(
        import_into(dir, reg, &[], &["--ca-bundle", "ca.pem"]),
        "import without credentials",
    );
    assert!(err.contains("podman login"), "{err}");
    let wrong = dir.join("wrong.json");
    let err = fails(
        import_into(
            dir,
            reg,
            &[("REGISTRY_AUTH_FILE", &wrong)],
            &["--ca-bundle", "ca.pem"],
        ),
        "import with a wrong password",
    );
    assert!(
        err.contains("refused the credentials of \"mirror\""),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password"),
        "the password is never printed: {err}"
    );
    let auth = dir.join("auth.json");
    let err = fails(
        import_into(dir, reg, &[("REGISTRY_AUTH_FILE", &auth)], &[]),
        "import without the CA",
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// The token service of distribution's bearer-token flow, as a site runs one beside its
/// registry (no packaged one is reachable here): it checks the user's password (HTTP Basic)
/// and issues a JWT granting the scopes asked for, signed RS256 by openssl with a key whose
/// certificate rides in `x5c`. The registry checks that token itself (issuer, audience,
/// signature chained to its `rootcertbundle`, the access claims), so nothing the product does
/// is taken on trust.
struct TokenService {
    addr: String,
}

impl TokenService {
    fn start(dir: &Path, user: &'static str, password: &'static str) -> Self {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=token-issuer",
                "-keyout",
                "token.key",
                "-out",
                "token.pem",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-in",
                "token.pem",
                "-outform",
                "DER",
                "-out",
                "token.der",
            ],
        );
        let x5c = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join("token.der")).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dir = dir.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = serve_token(conn, &dir, &x5c, user, password);
            }
        });
        Self { addr }
    }
}

fn serve_token(
    mut conn: std::net::TcpStream,
    dir: &Path,
    x5c: &str,
    user: &str,
    password: &str,
) -> std::io::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let mut reader = std::io::BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_owned());
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let url = reqwest::Url::parse(&format!("http://token{path}")).unwrap();
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    if authorization.as_deref() != Some(expected.as_str()) {
        return conn.write_all(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    }
    let access: Vec<serde_json::Value> = url
        .query_pairs()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
            }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "site-token-issuer", "sub": user, "aud": "site-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}{}", access.len()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signing = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(signing.path(), &input)?;
    let sig = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", "token.key"])
        .arg(signing.path())
        .current_dir(dir)
        .output()?;
    let token = format!("{input}.{}", b64(&sig.stdout));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    conn.write_all(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn the_bearer_token_flow_gets_a_token_for_pull_and_push_with_the_users_password() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::create_dir(dir.join("home")).unwrap();
    pki(dir);
    let tokens = TokenService::start(dir, "mirror", "s3cret-pass");
    let reg = Registry::start_with_token_auth(
        &format!("http://{}/token", tokens.addr),
        &dir.join("token.pem"),
        &dir.join("registry.pem"),
        &dir.join("registry.key"),
        &dir.join("ca.pem"),
    );
    let man = seed(dir, &reg, "9", b"token-guarded\n");
    let key = keys().ed_secret();
    let common = ["--ca-bundle", "ca.pem"];
    let mut create = vec![
        "create",
        "--manifest",
        man.to_str().unwrap(),
        "--out",
        "m",
        "--key",
        &key,
    ];
    create.extend(common);
    let mut with_auth = create.clone();
    with_auth.extend(["--authfile", "auth.json"]);
    ok(
        bundle_as(&with_auth, dir, &[]),
        "create through the token service",
    );
    let pubkey = keys().ed_public();
    let mut import = vec![
        "import",
        "m",
        "--pubkey",
        &pubkey,
        "--registry",
        &reg.addr,
        "--dest",
        "site",
    ];
    import.extend(common);
    let wrong = dir.join("wrong.json");
    let err = fails(
        bundle_as(&import, dir, &[("REGISTRY_AUTH_FILE", &wrong)]),
        "push with a wrong password",
    );
    assert!(
        err.contains("refused the credentials of \"mirror\""),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");
    let auth = dir.join("auth.json");
    ok(
        bundle_as(&import, dir, &[("REGISTRY_AUTH_FILE", &auth)]),
        "push through the token service",
    );
    assert_registry_holds_the_media_image(dir, &reg, "9");
}
