//! Where things are (SPEC §8): the workspace root, the spec a user names, and the plan that
//! belongs to it; the one path normaliser ([`resolve_path`], symlinks followed) and the
//! containment check built on it ([`resolve_inside`]); and the bounded reading of the files
//! a user names ([`read_user_file`]).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::decl::Config;
use crate::error::ConfigError;

/// Largest config file (`.loop/config`, `config_file`) read: 1 MiB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
/// Largest prompt file (`prompt_file`, `.loop/prompt.txt`) read: 1 MiB.
pub const MAX_PROMPT_FILE_BYTES: u64 = 1 << 20;
/// Largest spec or plan read: 4 MiB.
pub const MAX_DOC_FILE_BYTES: u64 = 4 << 20;

/// `path` made absolute against `base`, with `.` and `..` removed and symlinks resolved: every
/// leading part that exists is resolved by the file system (so a symlink anywhere in it is
/// followed, and a `..` after a symlink climbs from where the link points); the parts that do
/// not exist yet are added as written. The second value is a symlink that exists but points
/// nowhere, if one was met (its target cannot be checked).
fn resolve_parts(base: &Path, path: &Path) -> (PathBuf, Option<PathBuf>) {
    let joined = base.join(path);
    let mut out = PathBuf::new();
    let mut missing_depth = 0usize;
    let mut dangling = None;
    for component in joined.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => out.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                // `out` holds no symlink: its existing part is resolved, the rest is missing.
                out.pop();
                missing_depth = missing_depth.saturating_sub(1);
            }
            Component::Normal(name) => {
                out.push(name);
                if missing_depth > 0 {
                    missing_depth += 1;
                    continue;
                }
                match std::fs::canonicalize(&out) {
                    Ok(real) => out = real,
                    Err(_) => {
                        if dangling.is_none() && std::fs::symlink_metadata(&out).is_ok() {
                            dangling = Some(out.clone());
                        }
                        missing_depth = 1;
                    }
                }
            }
        }
    }
    (out, dangling)
}

/// The one path normaliser: `path` made absolute against `base` (when relative), `.` and `..`
/// removed, symlinks resolved for the part that exists (see [`resolve_inside`] for the
/// containment check built on it).
pub fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    resolve_parts(base, path).0
}

/// Resolves `path` (relative ones against `root`) with [`resolve_path`] and refuses it, naming
/// `key`, when it does not stay inside `root` (resolved the same way), or when it passes a
/// symlink that points nowhere. `root` itself counts as inside.
pub fn resolve_inside(root: &Path, path: &Path, key: &str) -> Result<PathBuf, ConfigError> {
    let real_root = resolve_path(Path::new("/"), root);
    let (resolved, dangling) = resolve_parts(&real_root, path);
    let outside = |resolved: PathBuf| ConfigError::OutsideRoot {
        key: key.to_owned(),
        path: path.to_path_buf(),
        resolved,
        root: real_root.clone(),
    };
    if let Some(link) = dangling {
        return Err(ConfigError::UnusableFile {
            key: key.to_owned(),
            path: path.to_path_buf(),
            reason: format!(
                "{} is a symlink that points nowhere, so where it leads cannot be checked",
                link.display()
            ),
        });
    }
    if resolved.starts_with(&real_root) {
        Ok(resolved)
    } else {
        Err(outside(resolved))
    }
}

/// What kind of file `meta` describes, for messages.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads a file a user named (config, prompt, spec, plan) as text, refusing anything but a
/// regular file of at most `limit` bytes, with an error naming `key` and the path. Never
/// blocks on a FIFO or a device (the file is opened non-blocking and checked before reading)
/// and never reads more than `limit + 1` bytes. A missing file is `Ok(None)`.
pub fn read_user_file(key: &str, path: &Path, limit: u64) -> Result<Option<String>, ConfigError> {
    use std::os::unix::fs::OpenOptionsExt;
    let unusable = |reason: String| ConfigError::UnusableFile {
        key: key.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(unusable(format!(
            "it is {}; only regular files are read",
            file_kind(&meta)
        )));
    }
    let too_large = |size: u64| {
        unusable(format!(
            "it is {size} bytes, more than the {limit} bytes accepted"
        ))
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limit {
        return Err(too_large(size));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| unusable("it is not UTF-8 text".to_owned()))
}

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

/// `path` made absolute against `base` and normalised ([`resolve_path`]).
fn absolute(base: &Path, path: &Path) -> PathBuf {
    resolve_path(base, path)
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
    fn resolve_removes_dots_and_follows_symlinks() {
        assert_eq!(
            resolve_path(Path::new("/"), Path::new("/nonexistent-x/./b/../c")),
            Path::new("/nonexistent-x/c")
        );
        assert_eq!(
            resolve_path(Path::new("/"), Path::new("/../nonexistent-x")),
            Path::new("/nonexistent-x")
        );
        let f = fixture();
        let outside = f._dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, f.root.join("link")).unwrap();
        // `..` after a symlink climbs from where the link points.
        assert_eq!(
            resolve_path(&f.root, Path::new("link/../repo/specs")),
            f.root.join("specs")
        );
        assert_eq!(
            resolve_path(&f.root, Path::new("link/new/file.md")),
            outside.join("new/file.md")
        );
    }

    #[test]
    fn containment_refuses_escapes_by_dots_absolute_paths_and_symlinks() {
        let f = fixture();
        let outside = f._dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        touch(&outside.join("secret.md"));
        std::os::unix::fs::symlink(outside.join("secret.md"), f.root.join("specs/link.md"))
            .unwrap();
        std::os::unix::fs::symlink(&outside, f.root.join("specs/dirlink")).unwrap();
        std::os::unix::fs::symlink(f._dir.path().join("nowhere"), f.root.join("dangling")).unwrap();
        touch(&f.root.join("specs/real.md"));
        for given in [
            "specs/link.md",
            "specs/dirlink/secret.md",
            "specs/dirlink/new.md",
            "../outside/secret.md",
            "/etc/passwd",
        ] {
            let err = resolve_inside(&f.root, Path::new(given), "spec_path").unwrap_err();
            assert!(
                matches!(err, ConfigError::OutsideRoot { ref key, .. } if key == "spec_path"),
                "{given}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(given) && text.contains("outside"), "{text}");
        }
        let err = resolve_inside(&f.root, Path::new("dangling/x"), "log_dir").unwrap_err();
        assert!(err.to_string().contains("points nowhere"), "{err}");
        assert_eq!(
            resolve_inside(&f.root, Path::new("specs/../specs/real.md"), "spec_path").unwrap(),
            f.root.join("specs/real.md")
        );
        assert_eq!(
            resolve_inside(&f.root, Path::new("logs/loop"), "log_dir").unwrap(),
            f.root.join("logs/loop")
        );
        assert_eq!(
            resolve_inside(&f.root, Path::new("."), "log_dir").unwrap(),
            f.root
        );
    }

    #[test]
    fn user_files_must_be_small_regular_files() {
        let f = fixture();
        let ok = f.root.join("ok.txt");
        std::fs::write(&ok, "hello").unwrap();
        assert_eq!(
            read_user_file("prompt_file", &ok, 5).unwrap().as_deref(),
            Some("hello")
        );
        let err = read_user_file("prompt_file", &ok, 4).unwrap_err();
        assert!(err.to_string().contains("more than the 4 bytes"), "{err}");
        assert!(
            read_user_file("prompt_file", &f.root.join("missing"), 4)
                .unwrap()
                .is_none()
        );
        let err = read_user_file("config_file", &f.root, 4).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let err = read_user_file(".loop/config", Path::new("/dev/zero"), 1 << 20).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(".loop/config") && text.contains("character device"),
            "{text}"
        );
        let binary = f.root.join("bin");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert!(read_user_file("spec_path", &binary, 10).is_err());
    }
}
