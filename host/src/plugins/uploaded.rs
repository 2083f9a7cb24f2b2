//! Uploaded plugins on disk: `<data-dir>/plugins/<name>.<world>.wasm`. Written
//! when uploaded (atomically), loaded at start, removed when deleted. Operators
//! may also drop components there by hand.

use std::path::{Path, PathBuf};

use super::{PluginError, PluginMeta, Registry, World};

/// Names are what mirrors refer to: short, lower-case, URL-safe.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn path(dir: &Path, name: &str, world: World) -> PathBuf {
    dir.join(format!("{name}.{world}.wasm"))
}

/// Writes the component next to its final name, then renames it into place.
pub fn store(dir: &Path, name: &str, world: World, component: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let target = path(dir, name, world);
    let staged = target.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&staged, component)?;
    std::fs::rename(&staged, &target)
}

/// Removes every stored file of `name`, whatever its world.
pub fn remove(dir: &Path, name: &str) -> std::io::Result<()> {
    for world in World::ALL {
        match std::fs::remove_file(path(dir, name, world)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Loads every `<name>.<world>.wasm` in `dir` into `registry`. A file that does
/// not load is reported and skipped: one bad upload must not stop the service.
pub fn load_all(
    registry: &Registry,
    dir: &Path,
) -> Vec<Result<PluginMeta, (PathBuf, PluginError)>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut results = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some((name, world)) = file
            .strip_suffix(".wasm")
            .and_then(|stem| stem.rsplit_once('.'))
            .and_then(|(name, world)| Some((name, world.parse::<World>().ok()?)))
        else {
            continue;
        };
        if !valid_name(name) || registry.get(name).is_some_and(|p| p.builtin) {
            continue;
        }
        let loaded = std::fs::read(&path)
            .map_err(|e| PluginError::new(name, super::PluginErrorKind::Runtime(e.to_string())))
            .and_then(|bytes| registry.load(name, world, &bytes));
        results.push(loaded.map_err(|e| (path.clone(), e)));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_and_url_safe() {
        assert!(valid_name("semver-tags"));
        assert!(valid_name("v2"));
        for bad in [
            "",
            "-x",
            "Upper",
            "has space",
            "dot.ted",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
