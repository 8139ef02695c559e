//! The run's worktree and its HEAD, remembered only while nothing can have moved it.
//!
//! HEAD is asked for several times between two agent calls (before a step, after it, before a
//! verification, around a review pass). Anything that may move it (an agent, a verification
//! command, a seed commit, a merge) gets the worktree's path only through [`Worktree::lend`];
//! while a [`Lent`] path is out HEAD is never remembered, and giving it back forgets the
//! value. So the cache cannot go stale by forgetting to invalidate it: there is no
//! invalidation to forget.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{Vcs, VcsError};

/// How many lent paths are out and how often one was lent or given back.
#[derive(Debug, Default)]
struct Lending {
    out: AtomicU64,
    generation: AtomicU64,
}

impl Lending {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn quiet(&self) -> bool {
        self.out.load(Ordering::SeqCst) == 0
    }
}

/// The run's worktree: its path and its HEAD as last read.
#[derive(Debug)]
pub(crate) struct Worktree {
    path: PathBuf,
    lending: Arc<Lending>,
    /// HEAD as read at a generation when no path was lent out.
    known: Option<(u64, Option<String>)>,
}

impl Worktree {
    /// The worktree at `path`; nothing is known about its HEAD yet.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            lending: Arc::default(),
            known: None,
        }
    }

    /// The path, to read files or ask git questions that change nothing. Whatever may
    /// change the worktree takes [`Worktree::lend`] instead.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The path for something that may move HEAD (an agent, a command, a commit, a merge).
    /// HEAD is read afresh from now until the returned value is dropped, and once after.
    pub(crate) fn lend(&self) -> Lent {
        self.lending.out.fetch_add(1, Ordering::SeqCst);
        self.lending.generation.fetch_add(1, Ordering::SeqCst);
        Lent {
            path: self.path.clone(),
            lending: self.lending.clone(),
        }
    }

    /// HEAD of the worktree (`None` on an unborn branch): remembered while no path is lent
    /// and none was given back since it was read.
    pub(crate) async fn head(&mut self, vcs: &dyn Vcs) -> Result<Option<String>, VcsError> {
        let generation = self.lending.generation();
        if let Some((at, head)) = &self.known
            && *at == generation
            && self.lending.quiet()
        {
            return Ok(head.clone());
        }
        let head = vcs.head(&self.path).await?;
        self.known = (self.lending.quiet() && self.lending.generation() == generation)
            .then(|| (generation, head.clone()));
        Ok(head)
    }
}

/// The worktree's path lent to something that may change it; see [`Worktree::lend`].
#[derive(Debug)]
pub(crate) struct Lent {
    path: PathBuf,
    lending: Arc<Lending>,
}

impl Lent {
    /// The worktree's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.lending.generation.fetch_add(1, Ordering::SeqCst);
        self.lending.out.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impls::GitCli;
    use crate::testing::GitFixture;

    fn commit(fx: &GitFixture, name: &str) -> String {
        fx.commit_file(name, name, name);
        fx.head()
    }

    #[tokio::test]
    async fn head_is_read_again_after_anything_that_borrowed_the_path() {
        let fx = GitFixture::new();
        let vcs = GitCli::new();
        let mut wt = Worktree::new(fx.path().to_path_buf());
        let first = wt.head(&vcs).await.unwrap();
        assert_eq!(first.as_deref(), Some(fx.head().as_str()));

        // Moved behind the cache's back without a lend: the remembered value stays (this is
        // what the cache saves), which is why every mover must borrow the path.
        let moved = commit(&fx, "a.txt");
        assert_eq!(wt.head(&vcs).await.unwrap(), first);

        // A lend and its return make the next read fresh.
        drop(wt.lend());
        assert_eq!(
            wt.head(&vcs).await.unwrap().as_deref(),
            Some(moved.as_str())
        );

        // While a path is out, nothing is remembered: a commit during the lend is seen at
        // once and after the return.
        let lent = wt.lend();
        let during = commit(&fx, "b.txt");
        assert_eq!(
            wt.head(&vcs).await.unwrap().as_deref(),
            Some(during.as_str())
        );
        let after = commit(&fx, "c.txt");
        assert_eq!(
            wt.head(&vcs).await.unwrap().as_deref(),
            Some(after.as_str())
        );
        drop(lent);
        assert_eq!(
            wt.head(&vcs).await.unwrap().as_deref(),
            Some(after.as_str())
        );
    }
}
