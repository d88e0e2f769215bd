//! Every example configuration under `examples/` initialises from the mirror and validates.

use std::path::Path;

use crate::harness::{TERRAFORMS, Workdir};

fn example_dirs(root: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            example_dirs(&path, out);
        } else if path.extension().is_some_and(|e| e == "tf") && !out.contains(&root.to_path_buf())
        {
            out.push(root.to_path_buf());
        }
    }
}

#[test]
fn every_example_validates() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut dirs = Vec::new();
    example_dirs(&examples, &mut dirs);
    dirs.sort();
    assert!(dirs.len() >= 7, "examples found: {dirs:?}");
    for dir in dirs {
        let tmp = tempfile::tempdir().unwrap();
        let wd = Workdir::new(tmp.path(), TERRAFORMS[0]);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                // A module source relative to the repository still resolves from the copy.
                let modules = examples.join("../modules");
                let text = std::fs::read_to_string(&path)
                    .unwrap()
                    .replace("\"../../modules/", &format!("\"{}/", modules.display()));
                wd.write(&name, &text);
            } else if path.is_dir() && !path.join("main.tf").exists() {
                // Data beside the example (e.g. its policies directory).
                for f in std::fs::read_dir(&path).unwrap() {
                    let f = f.unwrap().path();
                    let rel = format!(
                        "{}/{}",
                        path.file_name().unwrap().to_str().unwrap(),
                        f.file_name().unwrap().to_str().unwrap()
                    );
                    wd.write(&rel, &std::fs::read_to_string(&f).unwrap());
                }
            }
        }
        // Resource examples carry no terraform block of their own; give them the provider source.
        let has_terraform_block = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .any(|text| text.contains("required_providers"));
        if !has_terraform_block {
            wd.write(
                "versions.tf",
                "terraform {\n  required_providers {\n    meshguard = { source = \"registry.terraform.io/meshguard/meshguard\" }\n  }\n}\n",
            );
        }
        wd.init_offline().ok();
        let validate = wd.run(&["validate", "-no-color"]);
        assert_eq!(validate.code, 0, "{}: {}", dir.display(), validate.all());
        let fmt = wd.run(&["fmt", "-check", "-no-color"]);
        assert_eq!(
            fmt.code,
            0,
            "{} is not terraform fmt clean: {}",
            dir.display(),
            fmt.all()
        );
    }
}
