//! The library's modules form layers, written down in ARCHITECTURE.md: a
//! module uses only modules of lower layers, so no two modules import
//! each other, directly or around a loop. This test reads every `crate::`
//! path in `src/` (code, not comments) and checks it against that list.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers listed in ARCHITECTURE.md after the marker line: numbered
/// lines naming modules in backticks, lowest first.
fn layers(manifest: &Path) -> BTreeMap<String, usize> {
    let text = fs::read_to_string(manifest.join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("<!-- layers -->")
        .expect("ARCHITECTURE.md has a `<!-- layers -->` list");
    let mut out = BTreeMap::new();
    for (layer, line) in text[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .enumerate()
    {
        for name in line.split('`').skip(1).step_by(2) {
            out.insert(name.to_owned(), layer);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments (line and doc comments; block
/// comments are not used in this code base).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| {
        let t = l.trim_start();
        if t.starts_with("//") {
            ""
        } else {
            // A trailing comment after code.
            l.find(" // ").map_or(l, |i| &l[..i])
        }
    })
}

/// The modules a file names through `crate::`: `crate::a::…`, and each
/// top-level item of `use crate::{a::…, b, …}`. Names re-exported at the
/// crate root (`crate::Error`) map to the module they come from.
fn used_modules(text: &str, root_items: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code: String = code_lines(text).collect::<Vec<_>>().join("\n");
    let mut out = BTreeSet::new();
    let mut name = |n: &str| {
        let n = root_items.get(n).map_or(n, String::as_str);
        out.insert(n.to_owned());
    };
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: the first word of each item at
            // brace depth 0.
            let mut depth = 0;
            let mut current = String::new();
            let mut done_item = false;
            for c in group.chars() {
                let at_top = depth == 0;
                match c {
                    '{' => depth += 1,
                    '}' if at_top => break,
                    '}' => depth -= 1,
                    ',' if at_top => {
                        if !current.is_empty() {
                            name(&current);
                        }
                        current.clear();
                        done_item = false;
                        continue;
                    }
                    _ => {}
                }
                if at_top && !done_item {
                    if c.is_alphanumeric() || c == '_' {
                        current.push(c);
                    } else if !current.is_empty() {
                        name(&current);
                        current.clear();
                        done_item = true;
                    }
                }
            }
            if !current.is_empty() {
                name(&current);
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            name(&ident);
        }
    }
    out
}

/// `pub use module::{Item, …};` lines of lib.rs: item → module.
fn root_items(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub use ")) {
        let Some((module, items)) = line.split_once("::") else {
            continue;
        };
        for item in items
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
        {
            out.insert(item.trim().to_owned(), module.to_owned());
        }
    }
    out
}

#[test]
fn every_module_uses_only_lower_layers() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = layers(manifest);
    let src = manifest.join("src");
    let root = root_items(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
        // The crate root and the binary (which uses the library by name).
        if ["lib", "main", "cli"].contains(&module.as_str()) {
            continue;
        }
        seen_modules.insert(module.clone());
        let Some(&mine) = layers.get(&module) else {
            problems.push(format!("module `{module}` is missing from the layers"));
            continue;
        };
        for used in used_modules(&fs::read_to_string(&file).unwrap(), &root) {
            if used == module {
                continue;
            }
            match layers.get(&used) {
                Some(&theirs) if theirs < mine => {}
                Some(_) => problems.push(format!(
                    "{}: `{module}` (layer {}) uses `{used}`, which is not below it",
                    rel.display(),
                    mine + 1
                )),
                None => problems.push(format!(
                    "{}: uses `crate::{used}`, which is not in the layers",
                    rel.display()
                )),
            }
        }
    }
    for listed in layers.keys() {
        if !seen_modules.contains(listed) {
            problems.push(format!("layers list `{listed}`, which is not a module"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_grouped_imports_and_ignores_comments() {
    let root = BTreeMap::from([("Error".to_owned(), "error".to_owned())]);
    let text = "use crate::{a::{X, Y}, b, Error};\n// crate::c in a comment\nlet x = crate::d::f(); // crate::e\n";
    let got: Vec<String> = used_modules(text, &root).into_iter().collect();
    assert_eq!(got, ["a", "b", "d", "error"]);
}
