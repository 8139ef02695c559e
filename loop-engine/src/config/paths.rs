//! Where things are (SPEC §8): the workspace root, the spec a user names, and the plan that
//! belongs to it. Every returned path is absolute and lexically normalised, so runs record
//! the same path however the user typed it.

use std::path::{Component, Path, PathBuf};

use super::decl::Config;
use crate::error::ConfigError;

/// The nearest ancestor of `start` (itself included) that contains `.git` (a directory, or a
/// file as in linked worktrees and submodules); `start` itself when there is none. Pass an
/// absolute path: a relative one is only searched as far as it reaches.
pub fn find_workspace_root(start: &Path) -> PathBuf {
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .unwrap_or(start)
        .to_path_buf()
}

/// Removes `.` components and resolves `..` against the preceding component, without
/// touching the file system (a `..` after a symlink is resolved lexically too).
pub fn normalize_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let last_is_normal =
                    matches!(out.components().next_back(), Some(Component::Normal(_)));
                if last_is_normal {
                    out.pop();
                } else if !out.has_root() {
                    // A relative path that climbs above its start keeps its `..`.
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `path` made absolute against `base` and normalised.
fn absolute(base: &Path, path: &Path) -> PathBuf {
    normalize_path(&base.join(path))
}

/// The places a relative name is looked for, in order, without duplicates.
fn candidates(places: &[PathBuf], given: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for place in places {
        let path = absolute(place, given);
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Resolves the spec a user named: as given (absolute, or relative to `cwd`), else relative
/// to the workspace root, else under `specs_dir`. The result is absolute and normalised;
/// [`ConfigError::SpecNotFound`] lists every path tried.
pub fn resolve_spec_path(
    workspace_root: &Path,
    cwd: &Path,
    given: &Path,
    config: &Config,
) -> Result<PathBuf, ConfigError> {
    let places = [
        cwd.to_path_buf(),
        workspace_root.to_path_buf(),
        workspace_root.join(&config.specs_dir),
    ];
    let tried = candidates(&places, given);
    match tried.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(ConfigError::SpecNotFound {
            given: given.display().to_string(),
            tried,
        }),
    }
}

/// The default plan of `spec`: `<workspace_root>/<plans_dir>/<spec file stem>-plan.md`,
/// absolute and normalised.
pub fn default_plan_path(workspace_root: &Path, config: &Config, spec: &Path) -> PathBuf {
    let stem = spec
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    absolute(
        &workspace_root.join(&config.plans_dir),
        Path::new(&format!("{stem}-plan.md")),
    )
}

/// Resolves the plan of a run. A given plan is looked for like a spec (as given, relative to
/// the workspace, under `plans_dir`); without one, [`default_plan_path`] is used.
/// [`ConfigError::PlanNotFound`] carries the path the user should create (or pass).
pub fn resolve_plan_path(
    workspace_root: &Path,
    cwd: &Path,
    given: Option<&Path>,
    config: &Config,
    spec: &Path,
) -> Result<PathBuf, ConfigError> {
    let tried = match given {
        Some(given) => candidates(
            &[
                cwd.to_path_buf(),
                workspace_root.to_path_buf(),
                workspace_root.join(&config.plans_dir),
            ],
            given,
        ),
        None => vec![default_plan_path(workspace_root, config, spec)],
    };
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    // The first candidate is what the user meant literally, or the default location.
    let expected = tried
        .into_iter()
        .next()
        .unwrap_or_else(|| default_plan_path(workspace_root, config, spec));
    Err(ConfigError::PlanNotFound {
        expected,
        spec: spec.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("specs/planning")).unwrap();
        std::fs::create_dir_all(root.join("sub/dir")).unwrap();
        Fixture { _dir: dir, root }
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
    }

    #[test]
    fn workspace_root_is_found_by_git_dir() {
        let f = fixture();
        std::fs::create_dir(f.root.join(".git")).unwrap();
        assert_eq!(find_workspace_root(&f.root.join("sub/dir")), f.root);
        assert_eq!(find_workspace_root(&f.root), f.root);
    }

    #[test]
    fn workspace_root_is_found_by_git_file() {
        let f = fixture();
        // Linked worktrees have a `.git` file pointing at the main repository.
        touch(&f.root.join("sub/.git"));
        assert_eq!(
            find_workspace_root(&f.root.join("sub/dir")),
            f.root.join("sub")
        );
    }

    #[test]
    fn workspace_root_falls_back_to_start() {
        let f = fixture();
        let start = f.root.join("sub/dir");
        // The temp dir may itself sit inside a repository; only claim what we can check.
        let found = find_workspace_root(&start);
        if !start.ancestors().any(|a| a.join(".git").exists()) {
            assert_eq!(found, start);
        } else {
            assert!(start.starts_with(&found));
        }
    }

    #[test]
    fn spec_as_given_relative_to_cwd() {
        let f = fixture();
        let cwd = f.root.join("sub");
        touch(&cwd.join("dir/s.md"));
        let got = resolve_spec_path(
            &f.root,
            &cwd,
            Path::new("./dir/../dir/s.md"),
            &Config::default(),
        )
        .unwrap();
        assert_eq!(got, f.root.join("sub/dir/s.md"));
        let abs = resolve_spec_path(&f.root, Path::new("/"), &got, &Config::default()).unwrap();
        assert_eq!(abs, got);
    }

    #[test]
    fn spec_relative_to_workspace() {
        let f = fixture();
        touch(&f.root.join("docs/s.md"));
        let got = resolve_spec_path(
            &f.root,
            &f.root.join("sub/dir"),
            Path::new("docs/s.md"),
            &Config::default(),
        )
        .unwrap();
        assert_eq!(got, f.root.join("docs/s.md"));
    }

    #[test]
    fn spec_under_specs_dir() {
        let f = fixture();
        touch(&f.root.join("specs/auth.md"));
        let got = resolve_spec_path(
            &f.root,
            &f.root.join("sub/dir"),
            Path::new("auth.md"),
            &Config::default(),
        )
        .unwrap();
        assert_eq!(got, f.root.join("specs/auth.md"));
    }

    #[test]
    fn spec_not_found_lists_every_path_tried() {
        let f = fixture();
        let cwd = f.root.join("sub");
        let err =
            resolve_spec_path(&f.root, &cwd, Path::new("nope.md"), &Config::default()).unwrap_err();
        let want = vec![
            f.root.join("sub/nope.md"),
            f.root.join("nope.md"),
            f.root.join("specs/nope.md"),
        ];
        match &err {
            ConfigError::SpecNotFound { given, tried } => {
                assert_eq!(given, "nope.md");
                assert_eq!(*tried, want);
            }
            other => panic!("unexpected error {other:?}"),
        }
        let text = err.to_string();
        for path in want {
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }

    #[test]
    fn default_plan_path_uses_plans_dir_and_stem() {
        let f = fixture();
        let spec = f.root.join("specs/auth.md");
        assert_eq!(
            default_plan_path(&f.root, &Config::default(), &spec),
            f.root.join("specs/planning/auth-plan.md")
        );
        let config = Config {
            plans_dir: "./plans/../plans".into(),
            ..Config::default()
        };
        assert_eq!(
            default_plan_path(&f.root, &config, &spec),
            f.root.join("plans/auth-plan.md")
        );
    }

    #[test]
    fn plan_resolves_default_and_given() {
        let f = fixture();
        let spec = f.root.join("specs/auth.md");
        touch(&f.root.join("specs/planning/auth-plan.md"));
        let got = resolve_plan_path(&f.root, &f.root, None, &Config::default(), &spec).unwrap();
        assert_eq!(got, f.root.join("specs/planning/auth-plan.md"));
        touch(&f.root.join("specs/planning/other.md"));
        let got = resolve_plan_path(
            &f.root,
            &f.root.join("sub"),
            Some(Path::new("other.md")),
            &Config::default(),
            &spec,
        )
        .unwrap();
        assert_eq!(got, f.root.join("specs/planning/other.md"));
    }

    #[test]
    fn missing_plan_hints_the_expected_path() {
        let f = fixture();
        let spec = f.root.join("specs/auth.md");
        let err = resolve_plan_path(&f.root, &f.root, None, &Config::default(), &spec).unwrap_err();
        let expected = f.root.join("specs/planning/auth-plan.md");
        assert!(matches!(
            &err,
            ConfigError::PlanNotFound { expected: e, spec: s } if *e == expected && *s == spec
        ));
        assert!(err.to_string().contains(&expected.display().to_string()));
        let err = resolve_plan_path(
            &f.root,
            &f.root.join("sub"),
            Some(Path::new("p.md")),
            &Config::default(),
            &spec,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::PlanNotFound { ref expected, .. } if *expected == f.root.join("sub/p.md")
        ));
    }

    #[test]
    fn normalize_removes_dots() {
        assert_eq!(normalize_path(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(normalize_path(Path::new("/../a")), Path::new("/a"));
        assert_eq!(
            normalize_path(Path::new("../a/../../b")),
            Path::new("../../b")
        );
    }
}
