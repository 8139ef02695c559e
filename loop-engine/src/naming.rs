//! Naming (SPEC §9): run names, spec slugs, branch names, worktree paths, iteration slugs.
//!
//! Names end up in branch names, folder names and file names, so everything here produces
//! plain ASCII and never an empty string. All functions are pure (but
//! `render_worktree_path`, which resolves symlinks in the path it renders); the caller
//! supplies what already exists (branches, file contents).

use std::path::{Path, PathBuf};

use crate::config::resolve_path;

/// The longest run name or slug we produce, in characters (SPEC §9).
pub(crate) const MAX_NAME_CHARS: usize = 64;

/// The slug used when nothing usable is left of the input.
const FALLBACK_SLUG: &str = "run";

/// File stems that say nothing about what a spec is for; such specs are named after their
/// first heading instead.
const GENERIC_STEMS: &[&str] = &[
    "spec",
    "specs",
    "specification",
    "readme",
    "index",
    "plan",
    "design",
    "prd",
    "requirements",
];

/// How much of the spec the naming prompt quotes, in characters: enough for the title and the
/// opening paragraphs, small enough to keep the naming call cheap.
const NAMING_EXCERPT_CHARS: usize = 2_000;

/// A worktree path template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum NamingError {
    /// The template names a placeholder other than `repo` and `run_branch`.
    #[error("render worktree path template `{template}`: unknown placeholder `{name}`")]
    UnknownPlaceholder {
        /// The template.
        template: String,
        /// The unknown placeholder.
        name: String,
    },
    /// The template applies a filter other than `sanitize`.
    #[error("render worktree path template `{template}`: unknown filter `{filter}`")]
    UnknownFilter {
        /// The template.
        template: String,
        /// The unknown filter.
        filter: String,
    },
    /// A `{{` has no matching `}}`.
    #[error("render worktree path template `{template}`: unclosed `{{{{`")]
    Unclosed {
        /// The template.
        template: String,
    },
    /// The repository root has no folder name to put in `{{ repo }}`.
    #[error("derive a repository name from `{}`", root.display())]
    NoRepoName {
        /// The repository root.
        root: PathBuf,
    },
    /// The template renders to an empty path.
    #[error("render worktree path template `{template}`: the result is empty")]
    EmptyPath {
        /// The template.
        template: String,
    },
}

/// Turns any text into a slug: lowercase ASCII letters, digits and single `-`, no leading or
/// trailing `-`, at most [`MAX_NAME_CHARS`] characters, `run` when nothing is left.
/// Non-ASCII characters are dropped; every other ASCII character separates words.
pub(crate) fn slugify(text: &str) -> String {
    let mut slug = String::with_capacity(text.len().min(MAX_NAME_CHARS));
    for c in text.chars().filter(char::is_ascii) {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(MAX_NAME_CHARS);
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        FALLBACK_SLUG.to_owned()
    } else {
        slug.to_owned()
    }
}

/// The slug of a spec: its file stem, or, when the stem is generic (`spec`, `readme`,
/// `index`, ...), the first `# ` heading of its contents. Falls back to the stem when there is
/// no usable heading.
pub(crate) fn spec_slug(spec_path: &Path, spec_contents: Option<&str>) -> String {
    let stem = spec_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem_slug = slugify(&stem);
    if !GENERIC_STEMS.contains(&stem_slug.as_str()) {
        return stem_slug;
    }
    spec_contents
        .and_then(first_heading)
        .map(slugify)
        .filter(|s| s != FALLBACK_SLUG)
        .unwrap_or(stem_slug)
}

/// The text of the first level-one ATX heading (`# Title`, closing `#`s dropped) outside
/// fenced code blocks.
fn first_heading(contents: &str) -> Option<&str> {
    let mut in_fence = false;
    for line in contents.lines() {
        let body = line.trim_start();
        if body.starts_with("```") || body.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some(title) = body.strip_prefix("# ") {
            let title = title.trim().trim_end_matches('#').trim();
            if !title.is_empty() {
                return Some(title);
            }
        }
    }
    None
}

/// Cleans a run name answered by the naming model: the first non-empty line, without quotes,
/// Markdown, a `Name:`-style prefix or punctuation, ASCII only, single spaces, at most
/// [`MAX_NAME_CHARS`] characters (cut at a word boundary when one exists). `None` when
/// nothing usable remains.
pub(crate) fn sanitize_name(raw: &str) -> Option<String> {
    let line = raw.lines().map(str::trim).find(|l| !l.is_empty())?;
    // Markdown the model may wrap its answer in: headings, quotes, list bullets.
    let line = line.trim_start_matches(['#', '>', '-', '*', '+', ' ', '\t']);
    let line = strip_label_prefix(line);
    let mut cleaned = String::with_capacity(line.len());
    for c in line.chars().filter(char::is_ascii) {
        match c {
            // Quotes and backticks vanish, so "don't" stays one word.
            '\'' | '"' | '`' => {}
            c if c.is_ascii_alphanumeric() || c == '-' => cleaned.push(c),
            _ => cleaned.push(' '),
        }
    }
    let words: Vec<&str> = cleaned
        .split_whitespace()
        .map(|w| w.trim_matches('-'))
        .filter(|w| !w.is_empty())
        .collect();
    let first = words.first()?;
    let mut name = String::new();
    if first.len() > MAX_NAME_CHARS {
        // One giant word: there is no boundary to cut at.
        name.push_str(&first[..MAX_NAME_CHARS]);
        return Some(name.trim_end_matches('-').to_owned());
    }
    for word in words {
        let extra = if name.is_empty() { 0 } else { 1 };
        if name.len() + extra + word.len() > MAX_NAME_CHARS {
            break;
        }
        if !name.is_empty() {
            name.push(' ');
        }
        name.push_str(word);
    }
    Some(name)
}

/// Most words a naming answer may have (the prompt asks for 2 to 5).
const MAX_LABEL_WORDS: usize = 6;

/// Checks that the naming model answered a short label of plain words (issue 13: an answer
/// such as "Blocked: the plan update failed (no-plan-file)" went into the branch name and the
/// squash commit) and returns it cleaned ([`sanitize_name`]). The answer must be one line
/// (surrounding quotes, backticks and a final period allowed) of at most
/// [`MAX_LABEL_WORDS`] words made of letters, digits, hyphens and apostrophes, with at least
/// one letter. `Err` says why the answer is no label.
pub(crate) fn validate_label(raw: &str) -> Result<String, String> {
    let lines: Vec<&str> = raw
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let shown = |s: &str| -> String { s.chars().take(80).collect() };
    let line = match lines.as_slice() {
        [] => return Err("the naming model answered nothing".to_owned()),
        [one] => *one,
        [first, ..] => {
            return Err(format!(
                "the naming model answered {} lines, not one label (first: `{}`)",
                lines.len(),
                shown(first)
            ));
        }
    };
    let quotes = ['"', '\'', '`'];
    let label = line.trim_end_matches('.').trim_matches(quotes);
    let label = strip_label_prefix(label)
        .trim_matches(quotes)
        .trim_end_matches('.')
        .trim();
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '\'')))
    {
        return Err(format!(
            "the naming model's answer `{}` is not a label of plain words (it contains `{bad}`)",
            shown(line)
        ));
    }
    let words = label.split_whitespace().count();
    if words == 0 || words > MAX_LABEL_WORDS || !label.chars().any(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "the naming model's answer `{}` is not a short label ({words} words; 1 to {MAX_LABEL_WORDS} expected)",
            shown(line)
        ));
    }
    sanitize_name(label).ok_or_else(|| {
        format!(
            "the naming model's answer `{}` is no usable name",
            shown(line)
        )
    })
}

/// Drops a leading `Name:`, `Label:` or `Title:` (any case) that models like to add.
fn strip_label_prefix(line: &str) -> &str {
    for label in ["name", "label", "title", "run name"] {
        if let Some(head) = line.get(..label.len())
            && head.eq_ignore_ascii_case(label)
            && let Some(rest) = line[label.len()..].trim_start().strip_prefix(':')
        {
            return rest.trim_start();
        }
    }
    line
}

/// `prefix + slug`, made unique against `existing` with `-2`, `-3`, ...: the first free
/// candidate wins, so gaps left by deleted branches are reused.
pub(crate) fn branch_name(prefix: &str, slug: &str, existing: &[String]) -> String {
    let base = format!("{prefix}{slug}");
    let taken = |name: &str| existing.iter().any(|e| e == name);
    if !taken(&base) {
        return base;
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or(base)
}

/// The rule of `git check-ref-format --branch` that `name` breaks, or `None` when git would
/// accept it as a branch name. Checked in process, so a bad `base_branch`,
/// `merge_target_branch` or `run_branch_prefix` is refused when a run is created rather than
/// when git first sees it; names starting with `-` are refused too, since git would read them
/// as options.
pub(crate) fn branch_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("a branch name cannot be empty");
    }
    if name.starts_with('-') {
        return Some("a branch name cannot begin with `-` (git would read it as an option)");
    }
    if name == "HEAD" {
        return Some("`HEAD` is not a branch name");
    }
    if name == "@" {
        return Some("a branch name cannot be the single character `@`");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Some("a branch name cannot begin or end with `/` or contain `//`");
    }
    if name.ends_with('.') {
        return Some("a branch name cannot end with `.`");
    }
    if name.contains("..") {
        return Some("a branch name cannot contain `..`");
    }
    if name.contains("@{") {
        return Some("a branch name cannot contain `@{`");
    }
    if name.chars().any(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Some(
            "a branch name cannot contain spaces, control characters or any of ~ ^ : ? * [ \\",
        );
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return Some(
            "no `/`-separated part of a branch name may begin with `.` or end with `.lock`",
        );
    }
    None
}

/// The default merge target of a spec: `agent/<slug>`.
pub(crate) fn default_merge_target(spec_slug: &str) -> String {
    format!("agent/{spec_slug}")
}

/// A branch name made safe for one path component: `/` and anything outside
/// `[A-Za-z0-9._-]` become `-`.
pub(crate) fn sanitize_branch(branch: &str) -> String {
    branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Renders `worktree_path_template`. Placeholders: `{{ repo }}` (the repository's folder
/// name) and `{{ run_branch }}`, each optionally followed by `| sanitize` (see
/// [`sanitize_branch`]); the spaces inside the braces are optional. A relative result is
/// taken relative to `repo_root`; `.`, `..` and symlinks are resolved with
/// [`resolve_path`](crate::config::resolve_path).
pub(crate) fn render_worktree_path(
    template: &str,
    repo_root: &Path,
    run_branch: &str,
) -> Result<PathBuf, NamingError> {
    let root = resolve_path(Path::new("/"), repo_root);
    let repo = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| NamingError::NoRepoName {
            root: repo_root.to_path_buf(),
        })?;

    let mut out = String::with_capacity(template.len() + run_branch.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| NamingError::Unclosed {
            template: template.to_owned(),
        })?;
        let mut parts = after[..close].split('|').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let mut value = match name {
            "repo" => repo.clone(),
            "run_branch" => run_branch.to_owned(),
            _ => {
                return Err(NamingError::UnknownPlaceholder {
                    template: template.to_owned(),
                    name: name.to_owned(),
                });
            }
        };
        for filter in parts {
            match filter {
                "sanitize" => value = sanitize_branch(&value),
                _ => {
                    return Err(NamingError::UnknownFilter {
                        template: template.to_owned(),
                        filter: filter.to_owned(),
                    });
                }
            }
        }
        out.push_str(&value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);

    if out.trim().is_empty() {
        return Err(NamingError::EmptyPath {
            template: template.to_owned(),
        });
    }
    let rendered = Path::new(&out);
    let full = if rendered.is_absolute() {
        rendered.to_path_buf()
    } else {
        root.join(rendered)
    };
    Ok(resolve_path(&root, &full))
}

/// The label of one step of a run: `3`, `3A2` (attempt 2), `3R1` (review 1), `3R1A2`.
pub(crate) fn iteration_label(iteration: u32, review: Option<u32>, attempt: Option<u32>) -> String {
    let mut label = iteration.to_string();
    if let Some(r) = review {
        label.push_str(&format!("R{r}"));
    }
    if let Some(a) = attempt {
        label.push_str(&format!("A{a}"));
    }
    label
}

/// The file-name form of a label: every number zero-padded to two digits (`7`→`07`,
/// `3R1A2`→`03R01A02`). A label that is not a number followed by letter-number pairs is made
/// filename-safe instead (anything outside `[A-Za-z0-9._-]` becomes `-`).
pub(crate) fn iteration_slug(label: &str) -> String {
    if let Some(parts) = label_parts(label) {
        return parts
            .iter()
            .map(|(letter, n)| match letter {
                Some(l) => format!("{l}{n:0>2}"),
                None => format!("{n:0>2}"),
            })
            .collect();
    }
    let safe = sanitize_branch(label.trim());
    if safe.is_empty() {
        "step".to_owned()
    } else {
        safe
    }
}

/// Splits `3R1A2` into `[(None, "3"), (Some('R'), "1"), (Some('A'), "2")]`; `None` when the
/// label does not have that shape.
fn label_parts(label: &str) -> Option<Vec<(Option<char>, &str)>> {
    let mut parts = Vec::new();
    let mut rest = label;
    let mut letter = None;
    loop {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        parts.push((letter, &rest[..digits]));
        rest = &rest[digits..];
        let mut chars = rest.chars();
        match chars.next() {
            None => return Some(parts),
            Some(c) if c.is_ascii_uppercase() => {
                letter = Some(c);
                rest = chars.as_str();
            }
            Some(_) => return None,
        }
    }
}

/// The prompt that asks the naming model for a short run label. Only the first
/// 2,000 characters of `spec_excerpt` are quoted.
pub(crate) fn naming_prompt(spec_excerpt: &str) -> String {
    let excerpt: String = spec_excerpt
        .trim()
        .chars()
        .take(NAMING_EXCERPT_CHARS)
        .collect();
    format!(
        "Give a short, memorable label for a coding run that implements the specification \
         below. The label names the run in lists and branch names.\n\
         \n\
         Rules:\n\
         - 2 to 5 plain English words, ASCII only, no punctuation, no quotes, no Markdown.\n\
         - Say what is being built, not how (\"billing export api\", not \"implement the plan\").\n\
         - Answer with the label alone on one line: no explanation, no preamble.\n\
         \n\
         Specification (excerpt):\n\
         <<<\n\
         {excerpt}\n\
         >>>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_basics() {
        assert_eq!(slugify("Hello, World!"), "hello-world");
        assert_eq!(slugify("  --Auth__Service  v2-- "), "auth-service-v2");
        assert_eq!(slugify("a   b---c"), "a-b-c");
        assert_eq!(slugify("UPPER lower 123"), "upper-lower-123");
    }

    #[test]
    fn slugify_drops_unicode_and_never_returns_empty() {
        assert_eq!(slugify("café au lait"), "caf-au-lait");
        assert_eq!(slugify("日本語"), "run");
        assert_eq!(slugify(""), "run");
        assert_eq!(slugify("---"), "run");
        assert_eq!(slugify("🚀 rocket"), "rocket");
    }

    #[test]
    fn slugify_cuts_to_64_without_trailing_dash() {
        let long = "word ".repeat(40);
        let slug = slugify(&long);
        assert!(slug.len() <= MAX_NAME_CHARS, "{}", slug.len());
        assert!(!slug.ends_with('-'));
        assert!(slug.starts_with("word-word"));
        assert_eq!(slugify(&"a".repeat(100)), "a".repeat(64));
    }

    #[test]
    fn spec_slug_from_stem() {
        assert_eq!(
            spec_slug(Path::new("specs/Billing Export.md"), None),
            "billing-export"
        );
        assert_eq!(
            spec_slug(Path::new("/abs/auth_service.md"), Some("# Something else")),
            "auth-service"
        );
        assert_eq!(spec_slug(Path::new("x-spec.md"), None), "x-spec");
    }

    #[test]
    fn spec_slug_generic_stem_uses_heading() {
        let contents =
            "Intro text\n```\n# not this one\n```\n## Sub\n# Order Tracking API ##\nbody";
        assert_eq!(
            spec_slug(Path::new("specs/SPEC.md"), Some(contents)),
            "order-tracking-api"
        );
        assert_eq!(
            spec_slug(Path::new("README.md"), Some("# Widget Store\n")),
            "widget-store"
        );
        assert_eq!(
            spec_slug(Path::new("index.md"), Some("no heading")),
            "index"
        );
        assert_eq!(spec_slug(Path::new("spec.md"), None), "spec");
        assert_eq!(spec_slug(Path::new("spec.md"), Some("# 日本語\n")), "spec");
        assert_eq!(spec_slug(Path::new(""), None), "run");
    }

    #[test]
    fn sanitize_name_cleans_model_answers() {
        assert_eq!(
            sanitize_name("Billing Export API").as_deref(),
            Some("Billing Export API")
        );
        assert_eq!(
            sanitize_name("\n\n  \"Quiet Harbor Sync\"  \nbecause...").as_deref(),
            Some("Quiet Harbor Sync")
        );
        assert_eq!(
            sanitize_name("**Label:** `order tracking`").as_deref(),
            Some("order tracking")
        );
        assert_eq!(
            sanitize_name("# Name: Fast-Path Cache!").as_deref(),
            Some("Fast-Path Cache")
        );
        assert_eq!(
            sanitize_name("- don't   panic, refactor.").as_deref(),
            Some("dont panic refactor")
        );
        assert_eq!(
            sanitize_name("Café — naïve résumé").as_deref(),
            Some("Caf nave rsum")
        );
    }

    #[test]
    fn sanitize_name_rejects_empty_answers() {
        assert_eq!(sanitize_name(""), None);
        assert_eq!(sanitize_name("\n  \n"), None);
        assert_eq!(sanitize_name("\"\" ... !!!"), None);
        assert_eq!(sanitize_name("日本語"), None);
        assert_eq!(sanitize_name("Label:"), None);
    }

    #[test]
    fn sanitize_name_cuts_at_a_word_boundary() {
        let raw = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima";
        let name = sanitize_name(raw).unwrap_or_default();
        assert_eq!(
            name,
            "alpha bravo charlie delta echo foxtrot golf hotel india juliet"
        );
        assert!(name.len() <= MAX_NAME_CHARS);
        let giant = "x".repeat(80);
        assert_eq!(sanitize_name(&giant), Some("x".repeat(64)));
        let exact = format!("{} {}", "a".repeat(30), "b".repeat(33));
        assert_eq!(sanitize_name(&exact).map(|n| n.len()), Some(64));
    }

    #[test]
    fn branch_names_are_deduplicated() {
        let existing = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(branch_name("run/", "auth", &[]), "run/auth");
        assert_eq!(
            branch_name("run/", "auth", &existing(&["run/other"])),
            "run/auth"
        );
        assert_eq!(
            branch_name("run/", "auth", &existing(&["run/auth"])),
            "run/auth-2"
        );
        assert_eq!(
            branch_name("run/", "auth", &existing(&["run/auth", "run/auth-2"])),
            "run/auth-3"
        );
        // Gaps are reused: the first free suffix wins.
        assert_eq!(
            branch_name("run/", "auth", &existing(&["run/auth", "run/auth-3"])),
            "run/auth-2"
        );
        assert_eq!(
            branch_name(
                "run/",
                "auth",
                &existing(&["run/auth", "run/auth-2", "run/auth-4"])
            ),
            "run/auth-3"
        );
        assert_eq!(branch_name("", "auth", &existing(&["auth"])), "auth-2");
    }

    #[test]
    fn branch_rules_follow_git_check_ref_format() {
        for ok in [
            "main",
            "agent/widget",
            "run/x-2",
            "feature/\u{e9}t\u{e9}",
            "v1.2",
            "a@b",
        ] {
            assert_eq!(branch_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "../../x",
            "HEAD",
            "--upload-pack=evil",
            "-x/",
            "--output=/tmp/x",
            "@",
            "a..b",
            "/a",
            "a/",
            "a//b",
            "a.",
            "a@{1}",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            "a\tb",
            ".hidden",
            "x/.hidden",
            "x.lock",
            "x.lock/y",
        ] {
            assert!(branch_name_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn merge_target_and_branch_sanitizing() {
        assert_eq!(
            default_merge_target("billing-export"),
            "agent/billing-export"
        );
        assert_eq!(sanitize_branch("run/auth-2"), "run-auth-2");
        assert_eq!(sanitize_branch("a/b c:d*é.x_y"), "a-b-c-d--.x_y");
    }

    #[test]
    fn worktree_path_default_template() {
        let p = render_worktree_path(
            "../{{ repo }}.{{ run_branch | sanitize }}",
            Path::new("/home/u/src/myrepo"),
            "run/auth-2",
        );
        assert_eq!(p, Ok(PathBuf::from("/home/u/src/myrepo.run-auth-2")));
    }

    #[test]
    fn worktree_path_template_variants() {
        let root = Path::new("/srv/repos/app/");
        let render = |t: &str| render_worktree_path(t, root, "run/x");
        assert_eq!(
            render("../{{repo}}.{{run_branch|sanitize}}"),
            Ok(PathBuf::from("/srv/repos/app.run-x"))
        );
        assert_eq!(
            render(".worktrees/{{ run_branch }}"),
            Ok(PathBuf::from("/srv/repos/app/.worktrees/run/x"))
        );
        assert_eq!(
            render("/tmp/wt/{{ repo }}/./{{ run_branch | sanitize }}"),
            Ok(PathBuf::from("/tmp/wt/app/run-x"))
        );
        assert_eq!(
            render("../../../../../{{ repo }}"),
            Ok(PathBuf::from("/app"))
        );
        assert_eq!(
            render("static-name"),
            Ok(PathBuf::from("/srv/repos/app/static-name"))
        );
        // `..` in the repository root itself is resolved before its name is taken.
        assert_eq!(
            render_worktree_path("../{{ repo }}-wt", Path::new("/a/b/../c"), "r"),
            Ok(PathBuf::from("/a/c-wt"))
        );
    }

    #[test]
    fn worktree_path_errors() {
        let root = Path::new("/srv/app");
        let err = render_worktree_path("../{{ branch }}", root, "r");
        assert!(
            matches!(&err, Err(NamingError::UnknownPlaceholder { name, .. }) if name == "branch")
        );
        assert!(
            err.map_err(|e| e.to_string())
                .unwrap_err()
                .contains("`branch`")
        );
        assert!(matches!(
            render_worktree_path("{{ repo | upper }}", root, "r"),
            Err(NamingError::UnknownFilter { filter, .. }) if filter == "upper"
        ));
        assert!(matches!(
            render_worktree_path("../{{ repo", root, "r"),
            Err(NamingError::Unclosed { .. })
        ));
        assert!(matches!(
            render_worktree_path("  ", root, "r"),
            Err(NamingError::EmptyPath { .. })
        ));
        assert!(matches!(
            render_worktree_path("{{ repo }}", Path::new("/"), "r"),
            Err(NamingError::NoRepoName { .. })
        ));
    }

    #[test]
    fn iteration_labels() {
        assert_eq!(iteration_label(3, None, None), "3");
        assert_eq!(iteration_label(3, None, Some(2)), "3A2");
        assert_eq!(iteration_label(3, Some(1), None), "3R1");
        assert_eq!(iteration_label(3, Some(1), Some(2)), "3R1A2");
        assert_eq!(iteration_label(12, Some(10), None), "12R10");
    }

    #[test]
    fn iteration_slugs() {
        assert_eq!(iteration_slug("7"), "07");
        assert_eq!(iteration_slug("3A2"), "03A02");
        assert_eq!(iteration_slug("3R1"), "03R01");
        assert_eq!(iteration_slug("3R1A2"), "03R01A02");
        assert_eq!(iteration_slug("12R10A3"), "12R10A03");
        assert_eq!(iteration_slug("123"), "123");
        assert_eq!(iteration_slug("final"), "final");
        assert_eq!(iteration_slug("final verify/1"), "final-verify-1");
        assert_eq!(iteration_slug("3R"), "3R");
        assert_eq!(iteration_slug("3r1"), "3r1");
        assert_eq!(iteration_slug(""), "step");
        for label in ["3R1A2", "7", "final"] {
            let slug = iteration_slug(label);
            assert!(
                slug.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            );
        }
    }

    #[test]
    fn only_a_short_label_of_plain_words_is_a_name() {
        assert_eq!(
            validate_label("billing export api\n").unwrap(),
            "billing export api"
        );
        assert_eq!(
            validate_label("\"Order tracking\".").unwrap(),
            "Order tracking"
        );
        assert_eq!(
            validate_label("Name: widget builder").unwrap(),
            "widget builder"
        );
        for bad in [
            "",
            "Blocked: the plan update failed (no-plan-file)",
            "I will run `ls` first\nwidget builder",
            "one two three four five six seven",
            "/tmp/x",
            "42",
            "**widget**",
        ] {
            let err = validate_label(bad).expect_err(bad);
            assert!(err.contains("naming model"), "{err}");
        }
    }

    #[test]
    fn naming_prompt_asks_for_the_label_only() {
        let prompt = naming_prompt("# Order Tracking\nTrack orders end to end.");
        assert!(prompt.contains("2 to 5"));
        assert!(prompt.contains("label alone"));
        assert!(prompt.contains("# Order Tracking\nTrack orders end to end."));
        let long = "z".repeat(10_000);
        let prompt = naming_prompt(&long);
        assert!(prompt.contains(&"z".repeat(NAMING_EXCERPT_CHARS)));
        assert!(!prompt.contains(&"z".repeat(NAMING_EXCERPT_CHARS + 1)));
    }
}
