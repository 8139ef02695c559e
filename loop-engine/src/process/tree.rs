//! Process trees of agents: `/proc` scanning, signals to groups and descendants, the gentle
//! and the hard stop, the orphans re-parented to us (as a child subreaper) and their reaping,
//! and the recovery-time search for survivors of a crashed daemon.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::{kill, killpg};
use nix::unistd::Pid;

/// How long a process group gets between TERM and KILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// The signals the engine sends to the processes it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGINT`: the polite stop (the Claude CLI then stops its tools).
    Interrupt,
    /// `SIGTERM`: stop now, cleaning up.
    Terminate,
    /// `SIGKILL`: stop at once, no cleanup.
    Kill,
}

impl Signal {
    fn to_nix(self) -> nix::sys::signal::Signal {
        match self {
            Self::Interrupt => nix::sys::signal::Signal::SIGINT,
            Self::Terminate => nix::sys::signal::Signal::SIGTERM,
            Self::Kill => nix::sys::signal::Signal::SIGKILL,
        }
    }
}

/// Sends `signal` to the process group `pgid`; false when no such group exists.
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    match i32::try_from(pgid) {
        Ok(raw) if raw > 1 => killpg(Pid::from_raw(raw), signal.to_nix()).is_ok(),
        _ => false,
    }
}

/// Sends `signal` to the single process `pid`; false when it does not exist.
fn signal_pid(pid: u32, signal: Signal) -> bool {
    match i32::try_from(pid) {
        Ok(raw) if raw > 1 => kill(Pid::from_raw(raw), signal.to_nix()).is_ok(),
        _ => false,
    }
}

/// True while any process of group `pgid` is alive. Zombies do not count: a killed child stays
/// a zombie (and `kill(0)` keeps succeeding) until its parent reaps it.
pub(crate) fn group_alive(pgid: u32) -> bool {
    if pgid <= 1 {
        return false;
    }
    match all_processes() {
        Some(table) => table.iter().any(|p| p.pgrp == pgid && p.is_alive()),
        // Without /proc the signal probe is the best we have, zombies included.
        None => match i32::try_from(pgid) {
            Ok(raw) => killpg(Pid::from_raw(raw), None).is_ok(),
            Err(_) => false,
        },
    }
}

/// TERM to the group, then KILL after `grace` if anything of it is still alive.
pub(crate) async fn terminate_group(pgid: u32, grace: Duration) {
    if !signal_group(pgid, Signal::Terminate) {
        return;
    }
    if !wait_until(grace, || !group_alive(pgid)).await {
        signal_group(pgid, Signal::Kill);
    }
}

/// Polls `done` until it holds or `limit` passes; true when it held.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How often process state is polled while waiting for processes to die.
const POLL: Duration = Duration::from_millis(20);

/// How long an agent gets after SIGINT (the Claude CLI then stops its tools) before SIGTERM.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Process id (field 1).
    pub pid: u32,
    /// State letter (field 3): `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Parent process id (field 4).
    pub ppid: u32,
    /// Process group id (field 5).
    pub pgrp: u32,
    /// Session id (field 6).
    pub session: u32,
    /// Start time in clock ticks since boot (field 22); with the pid it names one process.
    pub start_time: u64,
}

impl ProcStat {
    /// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and
    /// may itself contain spaces and parentheses, so the fields after it are found from the
    /// *last* `)`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        if close < open {
            return None;
        }
        let pid = text[..open].trim().parse().ok()?;
        let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
        // `rest[0]` is field 3, so field N is `rest[N - 3]`.
        let field = |n: usize| rest.get(n - 3).copied();
        Some(Self {
            pid,
            state: field(3)?.chars().next()?,
            ppid: field(4)?.parse().ok()?,
            pgrp: field(5)?.parse().ok()?,
            session: field(6)?.parse().ok()?,
            start_time: field(22)?.parse().ok()?,
        })
    }

    /// False for zombies and dead processes: they run nothing and only wait to be reaped.
    pub(crate) fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The `/proc/<pid>/stat` of `pid`, if such a process exists.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ProcStat::parse(&text)
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|p| p.start_time)
}

/// Every process of the system; `None` when `/proc` cannot be read.
pub(crate) fn all_processes() -> Option<Vec<ProcStat>> {
    let dir = std::fs::read_dir("/proc").ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            // A process can exit between the listing and the read: skipping it is right.
            .filter_map(proc_stat)
            .collect(),
    )
}

/// The children of `pid` (of every one of its threads), from
/// `/proc/<pid>/task/<tid>/children`; empty when the process is gone.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut kids = Vec::new();
    for task in tasks.filter_map(Result::ok) {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            kids.extend(
                text.split_whitespace()
                    .filter_map(|w| w.parse::<u32>().ok()),
            );
        }
    }
    kids
}

/// Whether this kernel has `/proc/<pid>/task/<tid>/children` (`CONFIG_PROC_CHILDREN`).
fn children_files() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let me = std::process::id();
        std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
    })
}

/// Whether the processes of an agent can be found by following child links from the agent
/// and from our own children: the kernel lists children, and we are a child subreaper (see
/// [`become_child_subreaper`](crate::process::become_child_subreaper)), so a descendant
/// whose parent died was re-parented to us rather than to init.
fn walk_supported() -> bool {
    children_files() && nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

#[cfg(test)]
/// Every process that descends from `pid` (children, their children, ...), following the
/// parent links of `/proc`. A process whose parent already died was re-parented and is no
/// longer found this way: [`ProcessTree`] remembers what it saw earlier.
pub(crate) fn descendants_of(pid: u32) -> Vec<ProcStat> {
    let table = all_processes().unwrap_or_default();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for p in table.iter().filter(|p| p.ppid == parent) {
            if p.pid != pid && !found.iter().any(|f: &ProcStat| f.pid == p.pid) {
                found.push(*p);
                frontier.push(p.pid);
            }
        }
    }
    found
}

/// True when `pid` exists, is not a zombie, and started at `start_time` (so it is the same
/// process that was recorded, not a later one that reuses the pid).
pub(crate) fn pid_alive_with_start(pid: u32, start_time: u64) -> bool {
    proc_stat(pid).is_some_and(|p| p.start_time == start_time && p.is_alive())
}

/// Recovery after a daemon crash: kills the recorded agent `pid` with SIGKILL, its process
/// group and every descendant, but only if `pid` still names the same process (its start time
/// matches). True when something was killed.
pub(crate) fn kill_survivor(pid: u32, start_time: u64) -> bool {
    if !pid_alive_with_start(pid, start_time) {
        return false;
    }
    let mut tree = ProcessTree::with_start(pid, Some(start_time));
    tree.kill_now();
    wait_gone(&mut tree);
    true
}

/// Recovery after a daemon crash, for agents whose pid never reached the store (the daemon
/// died between spawning and recording it): kills every process whose environment carries
/// `LOOP_RUN_ID=<run_id>` (what the engine gives each agent), with its tree, and waits until
/// they are gone. Returns the pids found.
pub(crate) fn kill_run_survivors(run_id: &str) -> Vec<u32> {
    let needle = format!("LOOP_RUN_ID={run_id}");
    let me = std::process::id();
    let found: Vec<ProcStat> = all_processes()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.pid != me && p.is_alive())
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect();
    for p in &found {
        let mut tree = ProcessTree::with_start(p.pid, Some(p.start_time));
        tree.kill_now();
        wait_gone(&mut tree);
    }
    found.into_iter().map(|p| p.pid).collect()
}

/// Recovery after a daemon crash: waits (up to `limit`) for the git processes the engine ran
/// for run `run_id` (marked `LOOP_RUN_ID=<run_id>` and `LOOP_VCS_CHILD=1`, hooks included)
/// to finish by themselves: a merge cut short would leave locks and a half-updated checkout.
/// What is still running after `limit` gets SIGTERM (git then removes its lock files), and
/// SIGKILL after [`KILL_GRACE`]. Returns the pids found.
pub(crate) fn wait_run_vcs_children(run_id: &str, limit: Duration) -> Vec<u32> {
    let run = format!("LOOP_RUN_ID={run_id}");
    let vcs = "LOOP_VCS_CHILD=1";
    let me = std::process::id();
    let find = || -> Vec<ProcStat> {
        all_processes()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.pid != me && p.is_alive())
            .filter(|p| environ_contains(p.pid, &run) && environ_contains(p.pid, vcs))
            .collect()
    };
    let mut seen: Vec<u32> = Vec::new();
    let deadline = std::time::Instant::now() + limit;
    loop {
        let live = find();
        for p in &live {
            if !seen.contains(&p.pid) {
                seen.push(p.pid);
            }
        }
        if live.is_empty() {
            return seen;
        }
        if std::time::Instant::now() >= deadline {
            for p in &live {
                signal_pid(p.pid, Signal::Terminate);
            }
            std::thread::sleep(KILL_GRACE);
            for p in find() {
                let mut tree = ProcessTree::with_start(p.pid, Some(p.start_time));
                tree.kill_now();
                wait_gone(&mut tree);
            }
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (2 s at most) until a killed tree is gone: a process dies only when the kernel
/// delivers the SIGKILL, and until then it may still create files (a git `index.lock`).
fn wait_gone(tree: &mut ProcessTree) {
    for _ in 0..200 {
        tree.refresh();
        if !tree.any_alive() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
/// Kills `pid`, its process group (when it leads one) and every descendant with SIGKILL, at
/// once and without waiting. For drop paths and emergencies; [`stop_agent`] is the gentle way.
pub(crate) fn kill_tree(pid: u32) {
    ProcessTree::new(pid).kill_now();
}

#[cfg(test)]
/// Stops an agent whose process group is `pgid` (the agent's pid): SIGINT to the group first
/// (the Claude CLI then stops its tools), SIGTERM after `grace`, SIGKILL after
/// [`KILL_GRACE`] more, then SIGKILL to every leftover descendant, including tool commands
/// that left the group with `setsid`. The caller should keep waiting on (reaping) the agent's
/// own child handle meanwhile; a zombie agent counts as stopped.
pub(crate) async fn stop_agent(pgid: u32, grace: Duration) {
    ProcessTree::new(pgid).stop(grace).await;
}

/// Pids of processes that descend from one of our agents and may be re-parented to us (as a
/// subreaper), with their start times. Only these are ever reaped by [`reap_orphans`], so the
/// children tokio spawned and reaps itself are never taken from it.
static ADOPTABLE: std::sync::Mutex<BTreeMap<u32, u64>> = std::sync::Mutex::new(BTreeMap::new());

fn adoptable() -> std::sync::MutexGuard<'static, BTreeMap<u32, u64>> {
    // The map stays consistent even if a holder panicked: every update is one insert/remove.
    ADOPTABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reaps the zombies among agent descendants that were re-parented to this process (see
/// [`become_child_subreaper`](crate::process::become_child_subreaper)), and forgets recorded
/// descendants that are gone. Only pids seen as descendants of an agent are waited for, one by
/// one, so tokio's own children are never reaped behind its back. Cheap; loopd may call it
/// periodically. Returns how many were reaped.
pub fn reap_orphans() -> usize {
    let candidates: Vec<(u32, u64)> = adoptable().iter().map(|(p, s)| (*p, *s)).collect();
    reap_pids(&candidates)
}

/// Reaps the given (pid, start time) pairs that are our zombie children; forgets the gone ones.
fn reap_pids(candidates: &[(u32, u64)]) -> usize {
    let me = std::process::id();
    let mut reaped = 0;
    for &(pid, start) in candidates {
        match proc_stat(pid) {
            Some(p) if p.start_time == start => {
                if p.ppid == me && !p.is_alive() && reap_one(pid) {
                    reaped += 1;
                    adoptable().remove(&pid);
                }
            }
            // Gone, or the pid now names another process.
            _ => {
                adoptable().remove(&pid);
            }
        }
    }
    reaped
}

/// Records the processes `pids` (of an agent's cgroup, about to be killed) as adoptable: when
/// they were re-parented to us (as a subreaper) their zombies are ours to reap. Returns them
/// with their start times, for [`reap_adopted`].
pub(crate) fn adopt(pids: &[u32]) -> Vec<(u32, u64)> {
    let found: Vec<(u32, u64)> = pids
        .iter()
        .filter_map(|pid| proc_stat(*pid).map(|p| (p.pid, p.start_time)))
        .collect();
    if !found.is_empty() {
        adoptable().extend(found.iter().copied());
    }
    found
}

/// Reaps those of `adopted` that are our zombies now; forgets the gone ones.
pub(crate) fn reap_adopted(adopted: &[(u32, u64)]) -> usize {
    reap_pids(adopted)
}

fn reap_one(pid: u32) -> bool {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    matches!(
        waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)),
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
    )
}

/// The processes of one agent: its own pid (also its process group id), every descendant seen
/// so far, and optionally a marker environment variable that identifies its orphans.
///
/// Descendants are found through parent links, which break when an intermediate process dies;
/// the tree therefore remembers every descendant it has seen (pid and start time, so a reused
/// pid is never mistaken for one) and should be refreshed while the agent runs. Orphans that
/// were started and abandoned between two refreshes are found by the marker variable when they
/// were re-parented to us (see [`become_child_subreaper`](crate::process::become_child_subreaper)).
#[derive(Clone, Debug)]
pub(crate) struct ProcessTree {
    root: u32,
    root_start: Option<u64>,
    marker: Option<String>,
    known: BTreeMap<u32, u64>,
    /// The root is our own child: its processes can be found by child links (see
    /// [`ProcessTree::table`]).
    spawned_here: bool,
}

impl ProcessTree {
    #[cfg(test)]
    /// The tree of `root`, whose start time is read now.
    pub(crate) fn new(root: u32) -> Self {
        Self::with_start(root, process_start_time(root))
    }

    /// The tree of `root`, which started at `root_start`.
    pub(crate) fn with_start(root: u32, root_start: Option<u64>) -> Self {
        Self {
            root,
            root_start,
            marker: None,
            known: BTreeMap::new(),
            spawned_here: false,
        }
    }

    /// Marks the root as a child this process spawned: where the kernel lists children and
    /// we are a child subreaper, the tree is then found by following child links from the
    /// root and from our own children instead of reading every process of `/proc`.
    pub(crate) fn spawned_here(mut self) -> Self {
        self.spawned_here = true;
        self
    }

    /// Also counts as ours every process re-parented to this process whose environment holds
    /// `KEY=VALUE` (`marker`), as the agent's environment did.
    pub(crate) fn with_marker(mut self, marker: impl Into<String>) -> Self {
        self.marker = Some(marker.into());
        self
    }

    #[cfg(test)]
    /// Pids of the descendants seen so far (the root excluded).
    pub(crate) fn known(&self) -> Vec<u32> {
        self.known.keys().copied().collect()
    }

    /// True when the root pid still names the agent (or no longer exists at all). When the
    /// pid was reused by an unrelated process, the agent's group is empty (Linux does not
    /// reuse a pid that is still a group id), and that process must not be signalled.
    fn root_is_ours(&self, table: &[ProcStat]) -> bool {
        match table.iter().find(|p| p.pid == self.root) {
            Some(p) => self.root_start.is_none_or(|s| s == p.start_time),
            None => true,
        }
    }

    /// The processes that can belong to the tree. For a tree [`spawned_here`](Self::spawned_here)
    /// where [`walk_supported`], only those reachable by child links from the root, from the
    /// descendants seen before, and from those of our own children (re-parented orphans) that
    /// are in the agent's group or carry its marker: the cost follows the agent's own
    /// processes and our children, not the machine's process count. Every group member and
    /// every descendant is reachable so: its parent is alive and one of them, or it was
    /// re-parented to us. Elsewhere (recovery of another daemon's agents, no children files,
    /// not a subreaper) every process of `/proc`.
    fn table(&self) -> Option<Vec<ProcStat>> {
        if !self.spawned_here || !walk_supported() {
            return all_processes();
        }
        let me = std::process::id();
        let mut frontier: Vec<u32> = vec![self.root];
        frontier.extend(self.known.keys().copied());
        let mut table: BTreeMap<u32, ProcStat> = BTreeMap::new();
        for child in children_of(me) {
            if child == self.root || self.known.contains_key(&child) {
                continue;
            }
            let Some(p) = proc_stat(child) else {
                continue;
            };
            if p.pgrp == self.root
                || self
                    .marker
                    .as_deref()
                    .is_some_and(|m| environ_contains(child, m))
            {
                table.insert(child, p);
                frontier.extend(children_of(child));
            }
        }
        while let Some(pid) = frontier.pop() {
            if table.contains_key(&pid) {
                continue;
            }
            let Some(p) = proc_stat(pid) else {
                continue;
            };
            table.insert(pid, p);
            // A reused pid names another process: its children are not ours.
            let ours = if pid == self.root {
                self.root_start.is_none_or(|s| s == p.start_time)
            } else {
                self.known.get(&pid).is_none_or(|s| *s == p.start_time)
            };
            if ours {
                frontier.extend(children_of(pid));
            }
        }
        Some(table.into_values().collect())
    }

    /// Re-reads `/proc` and records every descendant of the root, of the descendants seen
    /// before, and every marked orphan re-parented to us. Forgets the ones that are gone.
    pub(crate) fn refresh(&mut self) {
        if let Some(table) = self.table() {
            self.refresh_from(&table);
        }
    }

    fn refresh_from(&mut self, table: &[ProcStat]) {
        let me = std::process::id();
        let root_ours = self.root_is_ours(table);
        // Forget what is gone or was replaced by another process with the same pid.
        self.known.retain(|pid, start| {
            table
                .iter()
                .any(|p| p.pid == *pid && p.start_time == *start)
        });
        let mut frontier: Vec<u32> = self.known.keys().copied().collect();
        if root_ours {
            frontier.push(self.root);
            frontier.extend(
                table
                    .iter()
                    .filter(|p| p.pgrp == self.root && p.pid != self.root)
                    .map(|p| p.pid),
            );
        }
        if let Some(marker) = &self.marker {
            frontier.extend(
                table
                    .iter()
                    .filter(|p| p.ppid == me && p.pid != self.root)
                    .filter(|p| !self.known.contains_key(&p.pid))
                    .filter(|p| environ_contains(p.pid, marker))
                    .map(|p| p.pid),
            );
        }
        let mut added = Vec::new();
        while let Some(pid) = frontier.pop() {
            if pid != self.root
                && !self.known.contains_key(&pid)
                && let Some(p) = table.iter().find(|p| p.pid == pid)
            {
                self.known.insert(pid, p.start_time);
                added.push((pid, p.start_time));
            }
            for child in table.iter().filter(|p| p.ppid == pid) {
                if child.pid != self.root && !self.known.contains_key(&child.pid) {
                    frontier.push(child.pid);
                }
            }
        }
        if !added.is_empty() {
            adoptable().extend(added);
        }
    }

    /// Live (non-zombie) processes of the agent's group plus live known descendants.
    fn live(&self, table: &[ProcStat]) -> Vec<ProcStat> {
        let root_ours = self.root_is_ours(table);
        table
            .iter()
            .filter(|p| p.is_alive())
            .filter(|p| {
                (root_ours && (p.pid == self.root || p.pgrp == self.root))
                    || self.known.get(&p.pid) == Some(&p.start_time)
            })
            .copied()
            .collect()
    }

    /// True when the agent's group has no member at all (not even a zombie: one signal
    /// probe, no read of `/proc`) and no descendant of it was ever recorded. Meant for after
    /// the agent itself was reaped.
    pub(crate) fn group_gone_and_nothing_seen(&self) -> bool {
        let Ok(raw) = i32::try_from(self.root) else {
            return false;
        };
        raw > 1
            && self.known.is_empty()
            && killpg(Pid::from_raw(raw), None) == Err(nix::errno::Errno::ESRCH)
    }

    /// True while the agent's process group has a live member.
    pub(crate) fn group_alive(&self) -> bool {
        let Some(table) = self.table() else {
            return group_alive(self.root);
        };
        self.root_is_ours(&table)
            && table
                .iter()
                .any(|p| p.is_alive() && (p.pid == self.root || p.pgrp == self.root))
    }

    /// True while any process of the tree (group member or known descendant) is alive.
    pub(crate) fn any_alive(&mut self) -> bool {
        let Some(table) = self.table() else {
            return group_alive(self.root);
        };
        self.refresh_from(&table);
        !self.live(&table).is_empty()
    }

    /// Sends `signal` to the agent's group (when it is still ours).
    fn signal_group(&self, signal: Signal) {
        if let Some(table) = self.table()
            && self.root_is_ours(&table)
        {
            signal_group(self.root, signal);
        }
    }

    /// Refreshes, then sends `signal` to the group and to every live process of the tree.
    /// Returns how many processes were alive.
    pub(crate) fn signal_all(&mut self, signal: Signal) -> usize {
        let Some(table) = self.table() else {
            signal_group(self.root, signal);
            return 0;
        };
        self.refresh_from(&table);
        let live = self.live(&table);
        if self.root_is_ours(&table) {
            signal_group(self.root, signal);
        }
        for p in &live {
            signal_pid(p.pid, signal);
        }
        live.len()
    }

    /// SIGKILLs everything of the tree at once, repeating while new descendants show up
    /// (a dying shell may have forked). Does not wait for the dead to be reaped.
    pub(crate) fn kill_now(&mut self) {
        for _ in 0..5 {
            if self.signal_all(Signal::Kill) == 0 {
                break;
            }
        }
    }

    /// Reaps the known descendants that are zombies re-parented to us. Never touches the root:
    /// it is the caller's child and the caller reaps it.
    pub(crate) fn reap(&mut self) -> usize {
        if self.known.is_empty() {
            // Nothing was ever seen to descend from the agent: nothing to reap, and no reason
            // to read all of `/proc` on the path between two agent calls.
            return 0;
        }
        let known: Vec<(u32, u64)> = self.known.iter().map(|(p, s)| (*p, *s)).collect();
        let reaped = reap_pids(&known);
        self.refresh();
        reaped
    }

    /// The gentle stop of [`stop_agent`]: SIGINT to the group, SIGTERM after `grace`, SIGKILL
    /// after [`KILL_GRACE`], then SIGKILL to every leftover descendant, and reaping of those
    /// re-parented to us.
    pub(crate) async fn stop(&mut self, grace: Duration) {
        self.refresh();
        self.stop_group(Some(grace)).await;
        self.kill_leftovers().await;
    }

    /// Cleanup after the agent exited by itself: whatever it left behind (group members,
    /// descendants) gets SIGTERM, SIGKILL after [`KILL_GRACE`], and is reaped.
    pub(crate) async fn stop_leftovers(&mut self) {
        // The common case, an agent that left nothing behind, costs one read of `/proc`.
        let Some(table) = self.table() else {
            if !group_alive(self.root) {
                return;
            }
            self.stop_group(None).await;
            self.kill_leftovers().await;
            return;
        };
        self.refresh_from(&table);
        if self.live(&table).is_empty() {
            let known: Vec<(u32, u64)> = self.known.iter().map(|(p, s)| (*p, *s)).collect();
            reap_pids(&known);
            return;
        }
        self.stop_group(None).await;
        self.kill_leftovers().await;
    }

    async fn stop_group(&mut self, interrupt_grace: Option<Duration>) {
        if !self.group_alive() {
            return;
        }
        if let Some(grace) = interrupt_grace {
            self.signal_group(Signal::Interrupt);
            if self.wait_group_gone(grace).await {
                return;
            }
        }
        self.signal_group(Signal::Terminate);
        if self.wait_group_gone(KILL_GRACE).await {
            return;
        }
        self.signal_group(Signal::Kill);
    }

    /// Waits until the group has no live member, refreshing the tree meanwhile so descendants
    /// forked during the wait are remembered. True when the group is gone.
    async fn wait_group_gone(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.refresh();
            if !self.group_alive() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn kill_leftovers(&mut self) {
        self.kill_now();
        // SIGKILL takes effect asynchronously: wait (briefly) until everything is a zombie or
        // gone, reaping the zombies that were re-parented to us.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            self.reap();
            // A zombie whose parent is not us is its parent's to reap.
            let me = std::process::id();
            let all_gone = self
                .known
                .keys()
                .all(|pid| proc_stat(*pid).is_none_or(|p| !p.is_alive() && p.ppid != me));
            if all_gone || tokio::time::Instant::now() >= deadline {
                break;
            }
            if self.any_alive() {
                self.kill_now();
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// True when `/proc/<pid>/environ` holds the `KEY=VALUE` entry `entry`.
fn environ_contains(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Cmd, become_child_subreaper, exit_code_of};
    use tokio::io::AsyncReadExt;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".into(); // field 3
        fields[1] = "10".into(); // ppid
        fields[2] = "20".into(); // pgrp
        fields[3] = "30".into(); // session
        fields[19] = "987654".into(); // field 22
        let text = format!("4242 (a (b) c) ) {}\n", fields.join(" "));
        assert_eq!(
            ProcStat::parse(&text),
            Some(ProcStat {
                pid: 4242,
                state: 'S',
                ppid: 10,
                pgrp: 20,
                session: 30,
                start_time: 987_654,
            })
        );
        assert_eq!(ProcStat::parse("4242 (x) S 1 2"), None);
        assert_eq!(ProcStat::parse("garbage"), None);
    }

    #[test]
    fn own_process_facts() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(start));
        assert!(pid_alive_with_start(me, start));
        assert!(!pid_alive_with_start(me, start + 1));
    }

    /// Waits (up to 5 s) until `done` holds.
    async fn eventually(mut done: impl FnMut() -> bool) -> bool {
        wait_until(Duration::from_secs(5), &mut done).await
    }

    fn spawn_sh(script: &str) -> tokio::process::Child {
        Cmd::new("sh", "/")
            .args(["-c", script])
            .to_tokio()
            .spawn()
            .unwrap()
    }

    async fn first_line(child: &mut tokio::process::Child) -> u32 {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        tokio::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .await
            .unwrap();
        line.trim().parse().unwrap()
    }

    fn dead(pid: u32) -> bool {
        proc_stat(pid).is_none_or(|p| !p.is_alive())
    }

    #[tokio::test]
    async fn zombies_do_not_keep_a_group_alive() {
        let mut child = spawn_sh("sleep 30");
        let pid = child.id().unwrap();
        assert!(group_alive(pid));
        assert!(signal_group(pid, Signal::Kill));
        assert!(eventually(|| !group_alive(pid)).await);
        // Not reaped yet: the zombie still answers signals, but runs nothing.
        assert!(proc_stat(pid).is_some_and(|p| p.state == 'Z'));
        assert!(killpg(Pid::from_raw(pid as i32), None).is_ok());
        child.wait().await.unwrap();
    }

    #[tokio::test]
    async fn descendants_and_kill_tree() {
        let mut child = spawn_sh("sleep 30 & sleep 30 & echo ready; wait");
        let pid = child.id().unwrap();
        let mut line = String::new();
        {
            use tokio::io::AsyncBufReadExt;
            tokio::io::BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .await
                .unwrap();
        }
        let kids = descendants_of(pid);
        assert_eq!(kids.len(), 2, "{kids:?}");
        assert!(kids.iter().all(|k| k.ppid == pid && k.pgrp == pid));
        kill_tree(pid);
        child.wait().await.unwrap();
        assert!(eventually(|| kids.iter().all(|k| dead(k.pid))).await);
    }

    #[tokio::test]
    async fn stop_agent_escalates_to_kill() {
        // Ignored signals are inherited: neither the shell nor its sleeps die of INT or TERM.
        let mut child = spawn_sh("trap '' INT TERM; sleep 30 & sleep 30");
        let pid = child.id().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let kids = descendants_of(pid);
        assert_eq!(kids.len(), 2);
        let started = std::time::Instant::now();
        let (status, ()) = tokio::join!(child.wait(), stop_agent(pid, Duration::from_millis(100)));
        assert!(started.elapsed() >= KILL_GRACE);
        assert_eq!(exit_code_of(status.unwrap()), 128 + 9);
        assert!(!group_alive(pid));
        assert!(eventually(|| kids.iter().all(|k| dead(k.pid))).await);
    }

    #[tokio::test]
    async fn stop_agent_interrupts_first() {
        let mut child = spawn_sh("trap 'echo interrupted; exit 7' INT; sleep 30 & wait");
        let pid = child.id().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, ()) = tokio::join!(child.wait(), stop_agent(pid, Duration::from_secs(3)));
        assert_eq!(exit_code_of(status.unwrap()), 7);
        let mut out = String::new();
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out, "interrupted\n");
    }

    #[tokio::test]
    async fn kill_survivor_checks_the_start_time() {
        let mut child = spawn_sh("setsid sleep 300 & echo $!; sleep 300");
        let pid = child.id().unwrap();
        let grandchild = first_line(&mut child).await;
        let start = process_start_time(pid).unwrap();
        assert!(!kill_survivor(pid, start + 1));
        assert!(pid_alive_with_start(pid, start));
        assert!(kill_survivor(pid, start));
        child.wait().await.unwrap();
        assert!(eventually(|| dead(grandchild)).await);
        assert!(!pid_alive_with_start(pid, start));
        assert!(!kill_survivor(pid, start));
    }

    #[tokio::test]
    async fn a_spawned_tree_is_found_by_child_links() {
        become_child_subreaper().unwrap();
        if !children_files() {
            eprintln!(
                "skipped: this kernel has no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)"
            );
            return;
        }
        // Not part of the agent: our child too, but in its own group and without the marker.
        let mut other = spawn_sh("echo $$; sleep 300");
        let other_pid = first_line(&mut other).await;
        // The agent: one sleeper stays in its group, one leaves it with setsid, and one is
        // double-forked out of it (its parent exits at once, so it is re-parented to us).
        let mut child = Cmd::new("sh", "/")
            .args([
                "-c",
                "sleep 300 & setsid sleep 300 & (setsid sleep 300 & echo $!) ; echo ready; sleep 0.3",
            ])
            .env("LOOP_TEST_MARKER", "walk-1")
            .to_tokio()
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let orphan = first_line(&mut child).await;
        let mut tree = ProcessTree::new(pid)
            .with_marker("LOOP_TEST_MARKER=walk-1")
            .spawned_here();
        tree.refresh();
        child.wait().await.unwrap();
        // The agent is gone: its group's sleeper and the setsid'd one were re-parented to us.
        let me = std::process::id();
        assert!(
            eventually(|| proc_stat(orphan).is_some_and(|p| p.ppid == me && p.is_alive())).await
        );
        tree.refresh();
        let known = tree.known();
        assert!(known.contains(&orphan), "{known:?} lacks {orphan}");
        assert_eq!(known.len(), 3, "{known:?}");
        // Only the agent's processes (and our children) were read, not the whole machine.
        let table = tree.table().unwrap();
        assert!(table.iter().all(|p| p.pid != other_pid), "{table:?}");
        assert!(table.len() <= 4, "{table:?}");
        assert!(tree.any_alive());
        tree.kill_now();
        assert!(eventually(|| !tree.any_alive()).await);
        assert!(eventually(|| known.iter().all(|k| dead(*k))).await);
        reap_orphans();
        assert!(proc_stat(other_pid).is_some_and(|p| p.is_alive()));
        signal_group(other.id().unwrap(), Signal::Kill);
        other.wait().await.unwrap();
    }

    #[tokio::test]
    async fn orphans_are_found_and_reaped() {
        become_child_subreaper().unwrap();
        let me = std::process::id();

        // Seen as a descendant while its parent lived.
        let mut child = spawn_sh("setsid sleep 300 & echo $!; sleep 0.3");
        let pid = child.id().unwrap();
        let seen = first_line(&mut child).await;
        let mut tree = ProcessTree::new(pid);
        tree.refresh();
        assert!(tree.known().contains(&seen));
        child.wait().await.unwrap();
        assert!(eventually(|| proc_stat(seen).is_some_and(|p| p.ppid == me)).await);

        // Never seen: recognised by the marker in its environment once re-parented to us.
        let mut child = Cmd::new("sh", "/")
            .args(["-c", "setsid sleep 300 & echo $!"])
            .env("LOOP_TEST_MARKER", "m-1")
            .to_tokio()
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let unseen = first_line(&mut child).await;
        child.wait().await.unwrap();
        assert!(eventually(|| proc_stat(unseen).is_some_and(|p| p.ppid == me)).await);
        // Until `setsid` has run and exec'ed `sleep`, it is still in the shell's group (and so
        // rightly found without the marker).
        assert!(
            eventually(|| std::fs::read(format!("/proc/{unseen}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\0")))
            .await
        );
        let mut marked = ProcessTree::new(pid).with_marker("LOOP_TEST_MARKER=m-1");
        marked.refresh();
        assert_eq!(marked.known(), [unseen]);
        let mut unmarked = ProcessTree::new(pid).with_marker("LOOP_TEST_MARKER=other");
        unmarked.refresh();
        assert!(unmarked.known().is_empty());

        // Killed, they become our zombies; reaping removes them for good.
        marked.kill_now();
        tree.kill_now();
        assert!(eventually(|| !tree.any_alive() && !marked.any_alive()).await);
        assert!(proc_stat(seen).is_some_and(|p| p.state == 'Z'));
        assert!(reap_orphans() >= 2);
        assert!(proc_stat(seen).is_none());
        assert!(proc_stat(unseen).is_none());
    }
}
