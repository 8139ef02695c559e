//! Agents in their own cgroup (issue 18). Each agent invocation gets a cgroup of its own
//! under a parent named [`PARENT_NAME`], in the cgroup v2 hierarchy (on hybrid hosts the
//! unified one, `/sys/fs/cgroup/unified`, where `cgroup.procs`, `cgroup.kill`, `cgroup.events`
//! and `cpu.stat` work without controllers). Everything the agent starts, `setsid`'d or
//! double-forked, stays inside; the end of the call is one `cgroup.kill`, a wait for
//! `populated 0` (inotify on `cgroup.events`, no polling) and an `rmdir`. No scan of `/proc`.
//!
//! The `pids`, `memory` and `cpu` controllers are used where the host has them: enabled in
//! the parent's `cgroup.subtree_control` on cgroup v2, or as v1 hierarchies (`pids`,
//! `memory`) next to the unified one on hybrid hosts. A v1 hierarchy is used only for a call
//! with a limit of its controller (`agent_pids_max`, `agent_memory_max`): then a per-agent
//! cgroup of the same name is created under loopd's own v1 cgroup (so an agent stays inside
//! the limits loopd itself runs under), and its peak is measured too. Calls without such a
//! limit get the unified cgroup only (CPU time, kill, events), so each call makes, enters and
//! removes one cgroup instead of three; their memory and process peaks are measured only
//! where the controller is in the unified hierarchy.
//!
//! Placement before exec: the agent is started (with `posix_spawn`, no `pre_exec` closure)
//! through a tiny `/bin/sh` shim that writes `0` to the `cgroup.procs` files, which moves the
//! shim itself, and then `exec`s the agent: the agent's first instruction already runs in its
//! cgroup, and its pid is the shim's.
//!
//! Where no cgroup can be created (not root and no delegation, or [`NO_CGROUP_ENV`] set), the
//! process-group + `/proc` method of the `tree` module is used instead ([`containment`]).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::domain::AgentResources;

/// The name of the cgroup under which every agent cgroup is created.
pub const PARENT_NAME: &str = "loop-agents";

/// Set to `1` (any value but `0` or empty) to never use cgroups: agents are then contained by
/// process group and `/proc` scanning, as on hosts without cgroup access.
pub const NO_CGROUP_ENV: &str = "LOOP_NO_CGROUP";

/// How agents are contained on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Containment {
    /// One cgroup per agent invocation.
    Cgroup,
    /// The agent's process group plus a search of `/proc` for descendants that left it.
    ProcessGroup,
}

impl Containment {
    /// `cgroup` or `process-group`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cgroup => "cgroup",
            Self::ProcessGroup => "process-group",
        }
    }
}

/// A CPU limit: `quota_usec` of CPU time per `period_usec` (cgroup `cpu.max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuMax {
    /// CPU time allowed per period, in microseconds.
    pub quota_usec: u64,
    /// The period, in microseconds.
    pub period_usec: u64,
}

/// Resource limits of one agent invocation (config keys `agent_memory_max`,
/// `agent_pids_max`, `agent_cpu_max`). The default is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentLimits {
    /// Most bytes of memory.
    pub memory_max: Option<u64>,
    /// Most processes (and threads) alive at once.
    pub pids_max: Option<u32>,
    /// Most CPU time per period.
    pub cpu_max: Option<CpuMax>,
}

impl AgentLimits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory_max.is_none() && self.pids_max.is_none() && self.cpu_max.is_none()
    }

    /// The limits of a configuration, checked: a value that does not parse is an error naming
    /// the key and the value.
    ///
    /// # Errors
    /// A message naming the key and what it accepts.
    pub fn parse(
        memory_max: Option<&str>,
        pids_max: Option<u32>,
        cpu_max: Option<&str>,
    ) -> Result<Self, String> {
        let memory_max = memory_max
            .map(|v| {
                parse_bytes(v).ok_or_else(|| {
                    format!(
                        "agent_memory_max: `{v}` is not a size (bytes, or a number with K, M or G, e.g. 512M)"
                    )
                })
            })
            .transpose()?;
        let cpu_max = cpu_max
            .map(|v| {
                parse_cpus(v).ok_or_else(|| {
                    format!(
                        "agent_cpu_max: `{v}` is not a number of CPUs (e.g. 1, 0.5 or 2.5; at least 0.01)"
                    )
                })
            })
            .transpose()?;
        if pids_max == Some(0) {
            return Err("agent_pids_max: must be at least 1".into());
        }
        Ok(Self {
            memory_max,
            pids_max,
            cpu_max,
        })
    }

    /// Whether these limits can be applied on this host: `Err` names each limit whose
    /// controller is missing, and the containment in use.
    ///
    /// # Errors
    /// A message naming the key(s) that cannot be applied and why.
    pub fn check_supported(&self) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let host = match host() {
            Ok(h) => h,
            Err(why) => {
                return Err(format!(
                    "agent resource limits need cgroups, and agents are contained by process group here ({why}): unset {}",
                    self.keys().join(", ")
                ));
            }
        };
        let missing: Vec<&str> = self
            .wanted()
            .into_iter()
            .filter(|(_, c)| !host.has(*c))
            .map(|(key, _)| key)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} cannot be applied on this host: the {} controller is not available to loopd's cgroups (cgroup v2 with the controller enabled, or a v1 hierarchy of it)",
            missing.join(", "),
            self.wanted()
                .into_iter()
                .filter(|(k, _)| missing.contains(k))
                .map(|(_, c)| c.name())
                .collect::<Vec<_>>()
                .join(" / ")
        ))
    }

    fn wanted(&self) -> Vec<(&'static str, Controller)> {
        let mut v = Vec::new();
        if self.memory_max.is_some() {
            v.push(("agent_memory_max", Controller::Memory));
        }
        if self.pids_max.is_some() {
            v.push(("agent_pids_max", Controller::Pids));
        }
        if self.cpu_max.is_some() {
            v.push(("agent_cpu_max", Controller::Cpu));
        }
        v
    }

    /// Whether one of these limits is applied through controller `c`.
    fn needs(&self, c: Controller) -> bool {
        self.wanted().iter().any(|(_, w)| *w == c)
    }

    fn keys(&self) -> Vec<&'static str> {
        self.wanted().into_iter().map(|(k, _)| k).collect()
    }
}

/// `512`, `512K`, `64M`, `2G` (powers of 1024), any case, an optional trailing `B`.
fn parse_bytes(v: &str) -> Option<u64> {
    let t = v.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1u64 << 10),
        'M' => (&t[..t.len() - 1], 1 << 20),
        'G' => (&t[..t.len() - 1], 1 << 30),
        'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(mult).filter(|b| *b > 0)
}

/// A number of CPUs (`1.5`) as a quota per 100 ms period.
fn parse_cpus(v: &str) -> Option<CpuMax> {
    let cpus: f64 = v.trim().parse().ok()?;
    if !cpus.is_finite() || !(0.01..=1024.0).contains(&cpus) {
        return None;
    }
    let period_usec = 100_000u64;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "bounded to 1000..=102_400_000 above"
    )]
    let quota_usec = (cpus * period_usec as f64).round() as u64;
    Some(CpuMax {
        quota_usec,
        period_usec,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
        }
    }
}

/// Where agent cgroups are made on this host.
#[derive(Debug)]
struct Host {
    /// The parent of agent cgroups in the v2 (unified) hierarchy.
    unified: PathBuf,
    /// Controllers enabled for the children of `unified`.
    v2: Vec<Controller>,
    /// Parents in v1 hierarchies, for controllers v2 does not have here.
    v1: Vec<(Controller, PathBuf)>,
}

impl Host {
    fn has(&self, c: Controller) -> bool {
        self.v2.contains(&c) || self.v1.iter().any(|(v, _)| *v == c)
    }
}

static HOST: OnceLock<Result<Host, String>> = OnceLock::new();

fn host() -> &'static Result<Host, String> {
    HOST.get_or_init(detect)
}

/// How agents are contained on this host (detected once, on first use).
pub fn containment() -> Containment {
    if host().is_ok() {
        Containment::Cgroup
    } else {
        Containment::ProcessGroup
    }
}

/// The cgroup under which agent cgroups are made (`None` without cgroups).
pub fn cgroup_parent() -> Option<&'static Path> {
    host().as_ref().ok().map(|h| h.unified.as_path())
}

/// Why agents are contained by process group here (`None` when cgroups are used).
pub fn fallback_reason() -> Option<&'static str> {
    host().as_ref().err().map(String::as_str)
}

/// The controllers available to agent cgroups (`memory`, `pids`, `cpu`), empty without
/// cgroups.
pub fn controllers() -> Vec<&'static str> {
    match host() {
        Ok(h) => [Controller::Cpu, Controller::Memory, Controller::Pids]
            .into_iter()
            .filter(|c| h.has(*c))
            .map(Controller::name)
            .collect(),
        Err(_) => Vec::new(),
    }
}

tokio::task_local! {
    static PROCESS_GROUP_ONLY: ();
}

/// Runs `fut` with the agents it starts contained by process group and `/proc` scanning, as
/// on a host without cgroups (or with [`NO_CGROUP_ENV`] set), whatever this host offers. For
/// tests and comparisons of the two methods.
pub async fn without_cgroups<F: std::future::Future>(fut: F) -> F::Output {
    PROCESS_GROUP_ONLY.scope((), fut).await
}

fn forced_off() -> bool {
    PROCESS_GROUP_ONLY.try_with(|()| ()).is_ok()
}

fn env_forbids() -> bool {
    std::env::var_os(NO_CGROUP_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// One line of `/proc/self/mounts`: mount point, file system type, options.
fn mounts() -> Vec<(PathBuf, String, Vec<String>)> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dir, fstype, opts) = (f.get(1)?, f.get(2)?, f.get(3)?);
            Some((
                PathBuf::from(dir.replace("\\040", " ")),
                (*fstype).to_owned(),
                opts.split(',').map(str::to_owned).collect(),
            ))
        })
        .collect()
}

/// This process's cgroup path in the hierarchy whose `/proc/self/cgroup` line matches.
fn own_path(matches: impl Fn(&str, &str) -> bool) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        matches(id, ctrls).then(|| path.to_owned())
    })
}

fn under(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

fn detect() -> Result<Host, String> {
    if env_forbids() {
        return Err(format!("{NO_CGROUP_ENV} is set"));
    }
    let mounts = mounts();
    let v2_mount = mounts
        .iter()
        .filter(|(_, t, _)| t == "cgroup2")
        .map(|(d, _, _)| d.clone())
        .min_by_key(|d| d != Path::new("/sys/fs/cgroup"))
        .ok_or_else(|| "no cgroup v2 hierarchy is mounted".to_owned())?;
    if !v2_mount.join("cgroup.procs").exists() {
        return Err(format!("{} is not readable", v2_mount.display()));
    }
    let own = own_path(|id, _| id == "0").unwrap_or_else(|| "/".into());
    // The top level first (root), else under our own cgroup (a delegated subtree).
    let candidates = [
        v2_mount.join(PARENT_NAME),
        under(&v2_mount, &own).join(PARENT_NAME),
    ];
    let mut why = String::new();
    let unified = candidates
        .iter()
        .find(|p| match probe(p) {
            Ok(()) => true,
            Err(e) => {
                if why.is_empty() {
                    why = format!("cannot use a cgroup under {}: {e}", p.display());
                }
                false
            }
        })
        .cloned()
        .ok_or(why)?;
    let v2 = enable_v2_controllers(&v2_mount, &unified);
    let mut v1 = Vec::new();
    for c in [Controller::Pids, Controller::Memory] {
        if v2.contains(&c) {
            continue;
        }
        let Some((mount, _, _)) = mounts
            .iter()
            .find(|(_, t, o)| t == "cgroup" && o.iter().any(|o| o == c.name()))
        else {
            continue;
        };
        let path = own_path(|id, ctrls| id != "0" && ctrls.split(',').any(|x| x == c.name()))
            .unwrap_or_else(|| "/".into());
        let parent = under(mount, &path).join(PARENT_NAME);
        if std::fs::create_dir_all(&parent).is_ok() {
            v1.push((c, parent));
        }
    }
    Ok(Host { unified, v2, v1 })
}

/// Creates `parent` and checks that a child of it can be made, entered and killed.
fn probe(parent: &Path) -> io::Result<()> {
    std::fs::create_dir_all(parent)?;
    let dir = parent.join(format!("probe-{}", std::process::id()));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let result = (|| {
        if !dir.join("cgroup.kill").exists() {
            return Err(io::Error::other(
                "no cgroup.kill (the kernel is older than 5.14)",
            ));
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a one-off probe of the placement the agents use"
        )]
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", SHIM_PROBE, "sh"])
            .arg(dir.join("cgroup.procs"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other("cannot move a process into it"))
        }
    })();
    let _ = std::fs::remove_dir(&dir);
    result
}

const SHIM_PROBE: &str = "echo 0 > \"$1\"";

/// Enables `cpu`, `memory` and `pids` for the children of `parent` where the hierarchy has
/// them; returns those enabled.
fn enable_v2_controllers(mount: &Path, parent: &Path) -> Vec<Controller> {
    let all = [Controller::Cpu, Controller::Memory, Controller::Pids];
    // Each ancestor from the top must pass a controller down (the root is exempt from the
    // no-internal-process rule; elsewhere enabling fails while processes live there).
    let mut chain = vec![parent.to_owned()];
    let mut p = parent.parent();
    while let Some(dir) = p {
        if !dir.starts_with(mount) {
            break;
        }
        chain.push(dir.to_owned());
        if dir == mount {
            break;
        }
        p = dir.parent();
    }
    chain.reverse();
    for c in all {
        for dir in &chain {
            let enabled = read_words(&dir.join("cgroup.subtree_control"));
            if enabled.iter().any(|w| w == c.name()) {
                continue;
            }
            if !read_words(&dir.join("cgroup.controllers"))
                .iter()
                .any(|w| w == c.name())
            {
                break;
            }
            if std::fs::write(dir.join("cgroup.subtree_control"), format!("+{}", c.name())).is_err()
            {
                break;
            }
        }
    }
    let enabled = read_words(&parent.join("cgroup.subtree_control"));
    all.into_iter()
        .filter(|c| enabled.iter().any(|w| w == c.name()))
        .collect()
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A `key value` line's value in a flat-keyed cgroup file (`cpu.stat`, `cgroup.events`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The cgroup name of an agent invocation: `<run id>.<step id>.<unique>`, so recovery finds
/// the leftovers of a run by the prefix `<run id>.`.
pub(crate) fn agent_cgroup_name(run_id: &str, step_id: &str, unique: &str) -> String {
    format!("{run_id}.{step_id}.{unique}")
}

/// The cgroup(s) of one agent invocation.
#[derive(Debug)]
pub(crate) struct AgentCgroup {
    /// In the unified hierarchy: placement, kill, events, CPU time.
    unified: PathBuf,
    /// The same name in v1 hierarchies (hybrid hosts).
    v1: Vec<(Controller, PathBuf)>,
    /// Controllers of the unified cgroup.
    v2: Vec<Controller>,
    limits: AgentLimits,
}

impl AgentCgroup {
    /// Creates the cgroup(s) named `name` with `limits` applied; `Ok(None)` when agents are
    /// contained by process group on this host.
    pub(crate) fn create(name: &str, limits: &AgentLimits) -> io::Result<Option<Self>> {
        let Ok(host) = host() else {
            return Ok(None);
        };
        if forced_off() {
            return Ok(None);
        }
        if let Err(msg) = limits.check_supported() {
            return Err(io::Error::other(msg));
        }
        let unified = host.unified.join(name);
        std::fs::create_dir(&unified)?;
        let mut cg = Self {
            unified,
            v1: Vec::new(),
            v2: host.v2.clone(),
            limits: *limits,
        };
        // A v1 hierarchy only where a limit needs it: each one is one more cgroup to make,
        // enter and remove per call, and entering a cgroup is what costs the most here.
        for (c, parent) in host.v1.iter().filter(|(c, _)| limits.needs(*c)) {
            let dir = parent.join(name);
            if let Err(e) = std::fs::create_dir(&dir) {
                cg.remove();
                return Err(e);
            }
            cg.v1.push((*c, dir));
        }
        if let Err(e) = cg.apply_limits() {
            cg.remove();
            return Err(e);
        }
        Ok(Some(cg))
    }

    fn dir_of(&self, c: Controller) -> Option<(&Path, bool)> {
        if self.v2.contains(&c) {
            return Some((&self.unified, true));
        }
        self.v1
            .iter()
            .find(|(v, _)| *v == c)
            .map(|(_, d)| (d.as_path(), false))
    }

    fn apply_limits(&self) -> io::Result<()> {
        let write = |c: Controller, v2_file: &str, v1_file: &str, value: String| {
            let Some((dir, v2)) = self.dir_of(c) else {
                return Err(io::Error::other(format!(
                    "no {} controller for the agent's cgroup",
                    c.name()
                )));
            };
            let file = dir.join(if v2 { v2_file } else { v1_file });
            std::fs::write(&file, value)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))
        };
        if let Some(n) = self.limits.pids_max {
            write(Controller::Pids, "pids.max", "pids.max", n.to_string())?;
        }
        if let Some(b) = self.limits.memory_max {
            write(
                Controller::Memory,
                "memory.max",
                "memory.limit_in_bytes",
                b.to_string(),
            )?;
            // No swap to escape to, where the knob exists.
            if self.v2.contains(&Controller::Memory) {
                let _ = std::fs::write(self.unified.join("memory.swap.max"), "0");
            }
        }
        if let Some(c) = self.limits.cpu_max {
            write(
                Controller::Cpu,
                "cpu.max",
                "cpu.max",
                format!("{} {}", c.quota_usec, c.period_usec),
            )?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes `0` to, to enter every hierarchy.
    fn procs_files(&self) -> Vec<PathBuf> {
        std::iter::once(self.unified.join("cgroup.procs"))
            .chain(self.v1.iter().map(|(_, d)| d.join("cgroup.procs")))
            .collect()
    }

    /// The shim's arguments: `/bin/sh -c SHIM loop-agent-shim <procs files...> -- <program
    /// and arguments>`. It enters the cgroup, then `exec`s the agent (exit 125 and a message
    /// when it cannot enter).
    pub(crate) fn shim_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["-c".into(), SHIM.into(), "loop-agent-shim".into()];
        args.extend(self.procs_files().into_iter().map(PathBuf::into_os_string));
        args.push("--".into());
        args
    }

    /// True while a process (not a zombie) is in the cgroup.
    pub(crate) fn populated(&self) -> bool {
        std::fs::read_to_string(self.unified.join("cgroup.events"))
            .ok()
            .and_then(|t| keyed(&t, "populated"))
            .is_none_or(|p| p != 0)
    }

    /// The pids in the cgroup now.
    pub(crate) fn pids(&self) -> Vec<u32> {
        read_pids(&self.unified)
    }

    /// SIGKILLs every process of the cgroup at once (`cgroup.kill`), forks in flight
    /// included.
    pub(crate) fn kill(&self) {
        kill_dir(&self.unified);
    }

    /// Waits until the cgroup is empty (inotify on `cgroup.events`), at most `limit`; true
    /// when it is.
    pub(crate) async fn wait_empty(&self, limit: Duration) -> bool {
        wait_empty_async(&self.unified, limit).await
    }

    /// What the cgroup's processes used, and the limit that stopped them, if one did.
    pub(crate) fn usage(&self) -> AgentResources {
        let cpu = std::fs::read_to_string(self.unified.join("cpu.stat"))
            .ok()
            .and_then(|t| keyed(&t, "usage_usec"))
            .unwrap_or(0);
        let memory_peak_bytes = self.dir_of(Controller::Memory).and_then(|(d, v2)| {
            read_u64(&d.join(if v2 {
                "memory.peak"
            } else {
                "memory.max_usage_in_bytes"
            }))
        });
        let pids_peak = self
            .dir_of(Controller::Pids)
            .and_then(|(d, _)| read_u64(&d.join("pids.peak")));
        let limit_hit = self.limit_hit();
        AgentResources {
            cpu_usec: cpu,
            memory_peak_bytes,
            pids_peak,
            limit_hit,
        }
    }

    /// The limit the agent ran into (`agent_pids_max`: a fork was refused;
    /// `agent_memory_max`: a process was killed for memory), if any.
    pub(crate) fn limit_hit(&self) -> Option<String> {
        if self.limits.pids_max.is_some()
            && let Some((d, _)) = self.dir_of(Controller::Pids)
            && std::fs::read_to_string(d.join("pids.events"))
                .ok()
                .and_then(|t| keyed(&t, "max"))
                .is_some_and(|n| n > 0)
        {
            return Some("agent_pids_max".to_owned());
        }
        if self.limits.memory_max.is_some()
            && let Some((d, v2)) = self.dir_of(Controller::Memory)
        {
            let oom = if v2 {
                std::fs::read_to_string(d.join("memory.events"))
                    .ok()
                    .and_then(|t| keyed(&t, "oom_kill"))
            } else {
                std::fs::read_to_string(d.join("memory.oom_control"))
                    .ok()
                    .and_then(|t| keyed(&t, "oom_kill"))
            };
            if oom.is_some_and(|n| n > 0) {
                return Some("agent_memory_max".to_owned());
            }
        }
        None
    }

    /// Removes the (empty) cgroup(s). Best effort: a cgroup that cannot be removed yet is
    /// found again by recovery.
    pub(crate) fn remove(&self) {
        for (_, d) in &self.v1 {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.unified);
    }
}

/// Enters every `cgroup.procs` named before `--`, then runs the rest.
const SHIM: &str = "while [ \"$1\" != -- ]; do echo 0 > \"$1\" || { echo \"loop: cannot enter the agent's cgroup ($1)\" >&2; exit 125; }; shift; done; shift; exec \"$@\"";

fn read_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn kill_dir(dir: &Path) {
    // Gone or already empty: nothing to kill.
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
}

fn events_populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .ok()
        .and_then(|t| keyed(&t, "populated"))
        .is_some_and(|p| p != 0)
}

struct Watch(nix::sys::inotify::Inotify);

fn watch_events(dir: &Path) -> io::Result<Watch> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let fd = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    fd.add_watch(&dir.join("cgroup.events"), AddWatchFlags::IN_MODIFY)?;
    Ok(Watch(fd))
}

async fn wait_empty_async(dir: &Path, limit: Duration) -> bool {
    if !events_populated(dir) {
        return true;
    }
    // inotify's fd is waited on in the blocking pool: tokio's `AsyncFd` registration of a
    // foreign fd needs `unsafe`, which this crate does not use.
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || wait_empty_blocking(&dir, limit))
        .await
        .unwrap_or(false)
}

fn wait_empty_blocking(dir: &Path, limit: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, poll};
    use std::os::fd::AsFd;
    if !events_populated(dir) {
        return true;
    }
    let Ok(watch) = watch_events(dir) else {
        return !events_populated(dir);
    };
    let deadline = std::time::Instant::now() + limit;
    loop {
        if !events_populated(dir) {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(watch.0.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, ms);
        let _ = watch.0.read_events();
    }
}

/// Recovery after a crash: kills every leftover cgroup of run `run_id` (named
/// `<run id>.*` under [`PARENT_NAME`]) with `cgroup.kill`, waits until each is empty and
/// removes it. Returns the pids that were still in them.
pub(crate) fn kill_run_cgroups(run_id: &str) -> Vec<u32> {
    let Ok(host) = host() else {
        return Vec::new();
    };
    let prefix = format!("{run_id}.");
    let mut killed = Vec::new();
    let names: Vec<String> = std::fs::read_dir(&host.unified)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    for name in names {
        let dir = host.unified.join(&name);
        killed.extend(read_pids(&dir));
        kill_dir(&dir);
        wait_empty_blocking(&dir, Duration::from_secs(10));
        for (_, parent) in &host.v1 {
            let _ = std::fs::remove_dir(parent.join(&name));
        }
        let _ = std::fs::remove_dir(&dir);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        let l = AgentLimits::parse(Some("512M"), Some(64), Some("1.5")).unwrap();
        assert_eq!(l.memory_max, Some(512 << 20));
        assert_eq!(l.pids_max, Some(64));
        assert_eq!(
            l.cpu_max,
            Some(CpuMax {
                quota_usec: 150_000,
                period_usec: 100_000
            })
        );
        assert_eq!(
            AgentLimits::parse(Some("2g"), None, None)
                .unwrap()
                .memory_max,
            Some(2 << 30)
        );
        assert_eq!(
            AgentLimits::parse(Some("1048576"), None, None)
                .unwrap()
                .memory_max,
            Some(1 << 20)
        );
        let e = AgentLimits::parse(Some("lots"), None, None).unwrap_err();
        assert!(e.contains("agent_memory_max") && e.contains("lots"), "{e}");
        let e = AgentLimits::parse(None, None, Some("-1")).unwrap_err();
        assert!(e.contains("agent_cpu_max"), "{e}");
        let e = AgentLimits::parse(None, Some(0), None).unwrap_err();
        assert!(e.contains("agent_pids_max"), "{e}");
        assert!(AgentLimits::default().is_empty());
    }

    #[test]
    fn reads_keyed_files() {
        let t = "usage_usec 1234\nuser_usec 1000\n";
        assert_eq!(keyed(t, "usage_usec"), Some(1234));
        assert_eq!(keyed(t, "user_usec"), Some(1000));
        assert_eq!(keyed(t, "nope"), None);
        assert_eq!(keyed("populated 0\nfrozen 0\n", "populated"), Some(0));
    }
}
