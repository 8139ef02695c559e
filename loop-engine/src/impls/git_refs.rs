//! Reading refs straight from a repository's files, so the questions the driver asks after
//! every agent step (which branch is checked out, which commit is HEAD, did the branch only
//! move forward) cost a few file reads instead of a `git` process each.
//!
//! Only the plain, common layout is understood: a `.git` directory or a linked worktree's
//! `.git` file, a symbolic `HEAD`, loose refs under `refs/heads/`, and reflog lines written by
//! `git commit`. Anything else (packed or reftable refs, symbolic refs pointing at symbolic
//! refs, an unborn branch, a history moved by anything but a commit) makes the reader answer
//! `None`, and the caller asks `git` itself. A `None` is never a "no": it only means "ask git".

use std::fs;
use std::path::{Path, PathBuf};

/// The reflog lines walked back at most before giving up and asking git.
const MAX_REFLOG_STEPS: usize = 10_000;

/// The biggest reflog read (bytes); a longer one is left to git.
const MAX_REFLOG_BYTES: u64 = 4 * 1024 * 1024;

/// What `HEAD` of a worktree holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeadFile {
    /// `ref: refs/heads/x`: the full ref name.
    Symbolic(String),
    /// A detached HEAD: the commit id.
    Detached(String),
}

/// The git directories of one worktree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefFiles {
    /// The worktree's own git dir (`HEAD`, the index): `.git` or `.git/worktrees/<name>`.
    git_dir: PathBuf,
    /// The repository's shared dir (refs, reflogs, objects).
    common_dir: PathBuf,
}

impl RefFiles {
    /// Finds the git dirs of the worktree whose top level is `worktree`. `None` when `worktree`
    /// is not the top of a checkout in the plain layout (e.g. a subdirectory, a bare
    /// repository, reftable refs).
    pub(crate) fn locate(worktree: &Path) -> Option<Self> {
        let dot_git = worktree.join(".git");
        let meta = fs::symlink_metadata(&dot_git).ok()?;
        let git_dir = if meta.is_dir() {
            dot_git
        } else if meta.is_file() {
            let text = fs::read_to_string(&dot_git).ok()?;
            let target = text.strip_prefix("gitdir:")?.trim();
            if target.is_empty() {
                return None;
            }
            worktree.join(target)
        } else {
            return None;
        };
        let common_dir = match fs::read_to_string(git_dir.join("commondir")) {
            Ok(text) => {
                let rel = text.trim();
                if rel.is_empty() {
                    return None;
                }
                git_dir.join(rel)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => git_dir.clone(),
            Err(_) => return None,
        };
        // A reftable repository keeps its refs in a binary table, not in files.
        if common_dir.join("reftable").exists() {
            return None;
        }
        Some(Self {
            git_dir,
            common_dir,
        })
    }

    /// What `HEAD` holds, or `None` when it cannot be read or parsed.
    pub(crate) fn head_file(&self) -> Option<HeadFile> {
        let text = fs::read_to_string(self.git_dir.join("HEAD")).ok()?;
        let text = text.trim_end_matches(['\n', '\r']);
        if let Some(target) = text.strip_prefix("ref:") {
            let target = target.trim();
            // Only branches: other symbolic targets may be per-worktree refs or chains.
            return is_branch_ref(target).then(|| HeadFile::Symbolic(target.to_owned()));
        }
        is_object_id(text).then(|| HeadFile::Detached(text.to_owned()))
    }

    /// The commit a loose branch ref points to; `None` when the ref is not a loose file
    /// holding an object id (packed, symbolic, unborn: ask git).
    pub(crate) fn loose_ref(&self, full_ref: &str) -> Option<String> {
        if !is_branch_ref(full_ref) {
            return None;
        }
        let text = fs::read_to_string(self.common_dir.join(full_ref)).ok()?;
        let id = text.trim_end_matches(['\n', '\r']);
        is_object_id(id).then(|| id.to_owned())
    }

    /// Where the branch `full_ref` points: `Some(Some(id))` from its loose file or
    /// `packed-refs`, `Some(None)` when neither has it (no such branch), `None` when the files
    /// cannot tell (a symbolic ref, unreadable files): ask git.
    pub(crate) fn branch_tip(&self, full_ref: &str) -> Option<Option<String>> {
        if !is_branch_ref(full_ref) {
            return None;
        }
        // Loose first, then packed: the order git reads them in, safe against a concurrent
        // `pack-refs` (it writes packed-refs before deleting the loose file).
        match fs::read_to_string(self.common_dir.join(full_ref)) {
            Ok(text) => {
                let id = text.trim_end_matches(['\n', '\r']);
                return is_object_id(id).then(|| Some(id.to_owned()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
        self.packed(full_ref)
    }

    /// A ref from `packed-refs`: `Some(None)` when the file or the entry is missing.
    fn packed(&self, full_ref: &str) -> Option<Option<String>> {
        let text = match fs::read_to_string(self.common_dir.join("packed-refs")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(None),
            Err(_) => return None,
        };
        for line in text.lines() {
            if line.starts_with('#') || line.starts_with('^') {
                continue;
            }
            let (id, name) = line.split_once(' ')?;
            if name == full_ref {
                return is_object_id(id).then(|| Some(id.to_owned()));
            }
        }
        Some(None)
    }

    /// The commit a revision written as a plain branch name (`main`) means to git, when
    /// nothing else of that name could win git's lookup order (a file in the git dir, a
    /// `refs/<name>` or a tag). `None`: ask git.
    pub(crate) fn branch_by_name(&self, name: &str) -> Option<String> {
        if !plainly_valid_branch_name(name) {
            return None;
        }
        let shadowed = |p: PathBuf| fs::symlink_metadata(p).is_ok();
        if shadowed(self.git_dir.join(name))
            || shadowed(self.common_dir.join(name))
            || shadowed(self.common_dir.join("refs").join(name))
            || shadowed(self.common_dir.join("refs/tags").join(name))
            || self.packed(&format!("refs/tags/{name}")) != Some(None)
            || self.packed(&format!("refs/{name}")) != Some(None)
        {
            return None;
        }
        self.branch_tip(&format!("refs/heads/{name}"))?
    }

    /// The default branch as the files tell it: `origin`'s HEAD when it is recorded, else
    /// the branch checked out in the primary checkout. `None` when the files cannot tell (a
    /// linked worktree, a detached HEAD, an odd remote HEAD): ask git.
    pub(crate) fn default_branch(&self) -> Option<String> {
        match fs::read_to_string(self.common_dir.join("refs/remotes/origin/HEAD")) {
            Ok(text) => {
                let name = text
                    .trim_end_matches(['\n', '\r'])
                    .strip_prefix("ref: refs/remotes/origin/")?;
                return plainly_valid_branch_name(name).then(|| name.to_owned());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
        if self.git_dir != self.common_dir {
            return None;
        }
        match self.head_file()? {
            HeadFile::Symbolic(r) => r.strip_prefix("refs/heads/").map(str::to_owned),
            HeadFile::Detached(_) => None,
        }
    }

    /// Every local branch (loose and packed), like `git for-each-ref refs/heads`; `None` when
    /// a file cannot be read: ask git.
    pub(crate) fn branches(&self) -> Option<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        let heads = self.common_dir.join("refs/heads");
        let mut dirs = vec![heads.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => return None,
            };
            for entry in entries {
                let entry = entry.ok()?;
                let kind = entry.file_type().ok()?;
                let path = entry.path();
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_file() {
                    let rel = path.strip_prefix(&heads).ok()?.to_str()?.to_owned();
                    if !rel.ends_with(".lock") {
                        names.insert(rel);
                    }
                }
            }
        }
        match fs::read_to_string(self.common_dir.join("packed-refs")) {
            Ok(text) => {
                for line in text.lines() {
                    if let Some((_, name)) = line.split_once(' ')
                        && let Some(branch) = name.strip_prefix("refs/heads/")
                    {
                        names.insert(branch.to_owned());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
        Some(names.into_iter().collect())
    }

    /// The commit HEAD resolves to, when the files tell it plainly.
    pub(crate) fn head_commit(&self) -> Option<String> {
        match self.head_file()? {
            HeadFile::Symbolic(r) => self.loose_ref(&r),
            HeadFile::Detached(id) => Some(id),
        }
    }

    /// `Some(true)` when the branch's reflog shows it moved from `since` to `head` by commits
    /// only (each a child of the one before, so `since` is an ancestor of `head`). `None` when
    /// the reflog cannot tell (missing, too long, or the branch moved by a reset, an amend,
    /// a rebase or a direct ref write): the caller asks git.
    pub(crate) fn moved_forward_by_commits(
        &self,
        full_ref: &str,
        since: &str,
        head: &str,
    ) -> Option<bool> {
        if since == head {
            return Some(true);
        }
        if !is_branch_ref(full_ref) || !is_object_id(since) || !is_object_id(head) {
            return None;
        }
        let path = self.common_dir.join("logs").join(full_ref);
        if fs::metadata(&path).ok()?.len() > MAX_REFLOG_BYTES {
            return None;
        }
        let text = fs::read_to_string(&path).ok()?;
        let mut want = head;
        for line in text.lines().rev().take(MAX_REFLOG_STEPS) {
            let entry = ReflogEntry::parse(line)?;
            if entry.new != want || !entry.makes_child() {
                return None;
            }
            if entry.old == since {
                return Some(true);
            }
            want = entry.old;
        }
        None
    }
}

/// One line of a reflog: `<old> <new> <ident> <time> <tz>\t<message>`.
struct ReflogEntry<'a> {
    old: &'a str,
    new: &'a str,
    message: &'a str,
}

impl<'a> ReflogEntry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (head, message) = line.split_once('\t')?;
        let mut words = head.splitn(3, ' ');
        let old = words.next()?;
        let new = words.next()?;
        (is_object_id(old) && is_object_id(new)).then_some(Self { old, new, message })
    }

    /// True for the entries `git commit` writes, whose new commit has the old one as its
    /// first parent. An amend, a reset or a rebase is not one of them.
    fn makes_child(&self) -> bool {
        self.message.starts_with("commit: ") || self.message.starts_with("commit (merge): ")
    }
}

/// True when `git check-ref-format --branch <name>` would accept `name` as it is, by the
/// rules git documents for ref names (ASCII only; anything unusual is left to git, so this may
/// say `false` where git says yes, never the other way round).
pub(crate) fn plainly_valid_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/'])
        && !name.ends_with(['/', '.'])
        && name != "HEAD"
        && name != "@"
        && !name.contains("@{")
        && !name.contains("..")
        && !name.contains("//")
        && name.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
        })
        && name
            .split('/')
            .all(|part| !part.starts_with('.') && !part.ends_with(".lock"))
}

/// A full branch ref name git could have written as a plain file.
fn is_branch_ref(name: &str) -> bool {
    name.strip_prefix("refs/heads/").is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('/')
            && !rest.ends_with('/')
            && !rest.ends_with(".lock")
            && rest.split('/').all(|part| {
                !part.is_empty() && part != "." && part != ".." && !part.starts_with('.')
            })
            && !rest.contains(['\\', '\0', ' ', '~', '^', ':', '?', '*', '['])
    })
}

/// A SHA-1 or SHA-256 object id in lowercase hex.
fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn line(old: &str, new: &str, msg: &str) -> String {
        format!("{old} {new} A U Thor <a@example.com> 1700000000 +0000\t{msg}\n")
    }

    fn repo_with_reflog(lines: &[String]) -> (tempfile::TempDir, RefFiles) {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        fs::create_dir_all(git.join("logs/refs/heads/run")).unwrap();
        fs::write(git.join("logs/refs/heads/run/x"), lines.concat()).unwrap();
        let files = RefFiles::locate(dir.path()).unwrap();
        (dir, files)
    }

    #[test]
    fn locates_a_linked_worktree_through_its_git_file_and_commondir() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main");
        let wt_git = main.join(".git/worktrees/wt");
        fs::create_dir_all(&wt_git).unwrap();
        fs::create_dir_all(main.join(".git/refs/heads/run")).unwrap();
        fs::write(wt_git.join("commondir"), "../..\n").unwrap();
        fs::write(wt_git.join("HEAD"), "ref: refs/heads/run/x\n").unwrap();
        fs::write(main.join(".git/refs/heads/run/x"), format!("{A}\n")).unwrap();
        let wt = dir.path().join("wt");
        fs::create_dir_all(&wt).unwrap();
        fs::write(wt.join(".git"), format!("gitdir: {}\n", wt_git.display())).unwrap();
        let files = RefFiles::locate(&wt).unwrap();
        assert_eq!(
            files.head_file(),
            Some(HeadFile::Symbolic("refs/heads/run/x".into()))
        );
        assert_eq!(files.head_commit().as_deref(), Some(A));
    }

    #[test]
    fn unborn_packed_or_odd_heads_are_left_to_git() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        fs::create_dir_all(git.join("refs/heads")).unwrap();
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let files = RefFiles::locate(dir.path()).unwrap();
        // Unborn (or packed): no loose file.
        assert_eq!(files.head_commit(), None);
        fs::write(git.join("refs/heads/main"), "ref: refs/heads/other\n").unwrap();
        assert_eq!(files.head_commit(), None, "a symbolic chain");
        fs::write(git.join("HEAD"), "ref: refs/bisect/bad\n").unwrap();
        assert_eq!(files.head_file(), None, "not a branch");
        fs::write(git.join("HEAD"), format!("{B}\n")).unwrap();
        assert_eq!(files.head_file(), Some(HeadFile::Detached(B.into())));
        assert_eq!(files.head_commit().as_deref(), Some(B));
        fs::create_dir_all(git.join("reftable")).unwrap();
        assert_eq!(RefFiles::locate(dir.path()), None);
        assert_eq!(RefFiles::locate(&dir.path().join("missing")), None);
    }

    #[test]
    fn a_chain_of_commits_is_forward_and_anything_else_asks_git() {
        let lines = [
            line(ZERO, A, "branch: Created from HEAD"),
            line(A, B, "commit: one"),
            line(B, C, "commit (merge): two"),
        ];
        let (_dir, files) = repo_with_reflog(&lines);
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/x", A, C),
            Some(true)
        );
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/x", B, C),
            Some(true)
        );
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/x", C, C),
            Some(true)
        );
        // `since` not in the chain before the branch was created: ask git.
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/x", ZERO, C),
            None
        );
        // The reflog does not end at head (a direct ref write): ask git.
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/x", A, B),
            None
        );
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/../x", A, C),
            None
        );

        let amended = [
            line(A, B, "commit: one"),
            line(B, C, "commit (amend): one again"),
        ];
        let (_dir, files) = repo_with_reflog(&amended);
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/x", B, C),
            None
        );
        let reset = [
            line(A, B, "commit: one"),
            line(B, A, "reset: moving to HEAD~1"),
        ];
        let (_dir, files) = repo_with_reflog(&reset);
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/x", B, A),
            None
        );
    }

    #[test]
    fn branch_tips_come_from_loose_files_then_packed_refs() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        fs::create_dir_all(git.join("refs/heads/run")).unwrap();
        fs::create_dir_all(git.join("refs/tags")).unwrap();
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(git.join("refs/heads/main"), format!("{A}\n")).unwrap();
        fs::write(
            git.join("packed-refs"),
            format!("# pack-refs with: peeled fully-peeled sorted\n{B} refs/heads/run/old\n{C} refs/tags/v1\n^{A}\n"),
        )
        .unwrap();
        let files = RefFiles::locate(dir.path()).unwrap();
        assert_eq!(files.branch_tip("refs/heads/main"), Some(Some(A.into())));
        assert_eq!(files.branch_tip("refs/heads/run/old"), Some(Some(B.into())));
        assert_eq!(files.branch_tip("refs/heads/run/new"), Some(None));
        assert_eq!(files.branch_by_name("main").as_deref(), Some(A));
        assert_eq!(files.branch_by_name("run/old").as_deref(), Some(B));
        assert_eq!(files.branch_by_name("nope"), None);
        // A tag of the same name would win git's lookup: ask git.
        fs::write(git.join("refs/tags/main"), format!("{C}\n")).unwrap();
        assert_eq!(files.branch_by_name("main"), None);
        assert_eq!(files.branch_by_name("HEAD"), None);
        assert_eq!(files.branch_by_name("main~1"), None);
    }

    #[test]
    fn default_branch_and_branch_list_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        fs::create_dir_all(git.join("refs/heads/run")).unwrap();
        fs::write(git.join("HEAD"), "ref: refs/heads/trunk\n").unwrap();
        fs::write(git.join("refs/heads/trunk"), format!("{A}\n")).unwrap();
        fs::write(git.join("refs/heads/run/a"), format!("{A}\n")).unwrap();
        fs::write(git.join("refs/heads/run/a.lock"), format!("{A}\n")).unwrap();
        fs::write(
            git.join("packed-refs"),
            format!("{B} refs/heads/old\n{C} refs/tags/v1\n"),
        )
        .unwrap();
        let files = RefFiles::locate(dir.path()).unwrap();
        assert_eq!(files.default_branch().as_deref(), Some("trunk"));
        assert_eq!(
            files.branches().unwrap(),
            vec!["old".to_owned(), "run/a".to_owned(), "trunk".to_owned()]
        );
        fs::create_dir_all(git.join("refs/remotes/origin")).unwrap();
        fs::write(
            git.join("refs/remotes/origin/HEAD"),
            "ref: refs/remotes/origin/dev\n",
        )
        .unwrap();
        assert_eq!(files.default_branch().as_deref(), Some("dev"));
        fs::write(git.join("HEAD"), format!("{A}\n")).unwrap();
        fs::remove_file(git.join("refs/remotes/origin/HEAD")).unwrap();
        assert_eq!(files.default_branch(), None, "detached: ask git");
    }

    #[test]
    fn plain_branch_names_follow_gits_rules() {
        for ok in ["main", "run/a-b_c.1", "agent/x@y", "feature/UPPER"] {
            assert!(plainly_valid_branch_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "/x",
            "x/",
            "x.",
            "a..b",
            "a//b",
            "HEAD",
            "@",
            "a@{1}",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            ".hidden",
            "a/.b",
            "x.lock",
            "a/b.lock/c",
            "é",
        ] {
            assert!(!plainly_valid_branch_name(bad), "{bad}");
        }
    }

    #[test]
    fn branch_ref_names_are_checked_before_they_become_paths() {
        assert!(is_branch_ref("refs/heads/run/a-b_c.1"));
        for bad in [
            "refs/heads/",
            "refs/heads/../x",
            "refs/heads/a/./b",
            "refs/heads/.hidden",
            "refs/heads/a.lock",
            "refs/tags/v1",
            "HEAD",
        ] {
            assert!(!is_branch_ref(bad), "{bad}");
        }
        assert!(is_object_id(A));
        assert!(!is_object_id("ABCDEF1111111111111111111111111111111111"));
        assert!(!is_object_id("abc"));
    }
}
