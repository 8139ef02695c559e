//! Several loopd on one PostgreSQL (issue 16, SPEC §14), with real processes: three daemons
//! share a database; runs are submitted through one of them; the owners of running runs are
//! killed with -9 (and one is frozen with SIGSTOP past its lease, then let go) at seeded random
//! moments. Every run completes, each task is committed once, no two agents ever overlapped in
//! a worktree, events are gap-free, every host lists every run, another host resumes a killed
//! host's run within 2 × the lease TTL, and the frozen host's late writes are refused
//! (fencing) and counted. A second test cuts one host's database connection (a TCP proxy that
//! is stopped): that host stops its agent when its lease lapses and the run moves on elsewhere.
//!
//! The database comes from `LOOP_TEST_POSTGRES_URL` (each test makes a fresh one); without it
//! the tests say why and pass, unless `LOOP_REQUIRE_POSTGRES=1`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loop_engine::domain::{RunId, RunStatus};
use loop_engine::testing::GitFixture;
use loop_http::api::ListQuery;
use nix::sys::signal::Signal;

use super::chaos::{Rng, agent_script, live_agents, pid_alive};
use super::{Daemon, create_request, free_port, signal, start_with_env};

/// The lease of these tests: short, so takeovers happen within seconds.
const TTL_SEC: u64 = 3;
const TASKS: usize = 10;
/// Seconds each agent step takes at least, so that runs are still going while hosts die.
const STEP_SEC: &str = "2";

async fn database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var("LOOP_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("LOOP_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "{test}: LOOP_REQUIRE_POSTGRES=1 but LOOP_TEST_POSTGRES_URL is not set"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: LOOP_TEST_POSTGRES_URL is not set (bin/pg-test-cluster starts a server)"
        );
        return None;
    };
    Some(
        loop_store::create_scratch_database(&admin)
            .await
            .expect("create a scratch database"),
    )
}

/// A repository whose runs use the chaos agent (pidfile overlap check, one task per step),
/// with room for every run on any one host, and no pause before an interrupted step is tried
/// again (the takeover time measured is the hosts', not the run's own retry policy).
fn repo(chaos: &Path) -> GitFixture {
    let repo = GitFixture::new();
    let script = repo.root().join("agent.sh");
    // The chaos agent, slowed down after it has claimed the worktree (its pidfile) and logged
    // its start, so that an overlap of two agents would be seen.
    let start_line = "echo \"start $$ $(date +%s%N)\" >> \"$log\"\n";
    let agent =
        agent_script(chaos).replacen(start_line, &format!("{start_line}sleep {STEP_SEC}\n"), 1);
    assert!(agent.contains(&format!("sleep {STEP_SEC}")));
    std::fs::write(&script, agent).expect("script");
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\nexecutor=command\nagent_cmd=sh {}\nmax_concurrency=12\nmax_runs_per_workspace=1\nclaude_retry_backoff_sec=0\nverify_cmds=test -f work.txt\n",
            script.display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    let plan: String = (1..=TASKS).map(|i| format!("- [ ] task {i}\n")).collect();
    repo.write_file("specs/planning/widget-plan.md", &plan);
    repo.commit_all("spec and plan");
    repo
}

struct Host {
    data: tempfile::TempDir,
    port: u16,
    url: String,
    daemon: Daemon,
    worker_id: String,
}

async fn start_host(data: &Path, port: u16, url: &str) -> (Daemon, String) {
    let ttl = TTL_SEC.to_string();
    let daemon = start_with_env(
        data,
        port,
        &[
            ("LOOPD_STORE", url),
            ("LOOPD_LEASE_TTL_SEC", &ttl),
            ("LOOPD_MAX_CONCURRENCY", "12"),
        ],
    )
    .await;
    let worker_id = daemon.client.health().await.expect("health").worker_id;
    (daemon, worker_id)
}

impl Host {
    async fn new(url: &str) -> Self {
        let data = tempfile::tempdir().expect("data dir");
        let port = free_port();
        let (daemon, worker_id) = start_host(data.path(), port, url).await;
        Self {
            data,
            port,
            url: url.to_owned(),
            daemon,
            worker_id,
        }
    }

    /// The daemon's stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join(format!("loopd-{}.stderr", self.port)))
            .unwrap_or_default()
    }

    async fn restart(&mut self) {
        let (daemon, worker_id) = start_host(self.data.path(), self.port, &self.url).await;
        assert_ne!(
            worker_id, self.worker_id,
            "a new daemon has a new worker id"
        );
        self.daemon = daemon;
        self.worker_id = worker_id;
    }
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The chaos agent's log name of a worktree.
fn log_name(worktree: &Path) -> String {
    std::fs::canonicalize(worktree)
        .expect("worktree")
        .display()
        .to_string()
        .replace('/', "_")
}

/// Agent start times (ns since the epoch) in a worktree, from the chaos agent's log.
fn agent_starts(chaos: &Path, worktree: &Path) -> Vec<u128> {
    std::fs::read_to_string(chaos.join(format!("{}.log", log_name(worktree))))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|t| t.parse().ok())
        .collect()
}

async fn running_on(
    hosts: &[Host],
    asker: usize,
    worker: &str,
) -> Vec<loop_http::api::RunResource> {
    hosts[asker]
        .daemon
        .client
        .list_runs(&ListQuery {
            statuses: vec![RunStatus::Running],
            limit: Some(1000),
            ..ListQuery::default()
        })
        .await
        .expect("list")
        .into_iter()
        .filter(|r| r.worker_id.as_deref() == Some(worker))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_queue_and_take_over_killed_hosts_runs() {
    let test = "three_hosts_share_the_queue_and_take_over_killed_hosts_runs";
    let Some(url) = database(test).await else {
        return;
    };
    let seed = std::env::var("LOOP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0051_0DE5_u64);
    let mut rng = Rng(seed.max(1));
    let started = Instant::now();
    let chaos = tempfile::tempdir().expect("chaos dir");
    let mut hosts = vec![
        Host::new(&url).await,
        Host::new(&url).await,
        Host::new(&url).await,
    ];
    let repos: Vec<GitFixture> = (0..12).map(|_| repo(chaos.path())).collect();
    let mut ids: Vec<RunId> = Vec::new();
    for r in &repos {
        ids.push(
            hosts[0]
                .daemon
                .client
                .create_run(&create_request(r))
                .await
                .expect("created")
                .run
                .id,
        );
    }

    // Any host streams the live output of a run executing on another one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (remote_run, reader) = loop {
        let mut found = None;
        for (i, host) in hosts.iter().enumerate() {
            if let Some(run) = running_on(&hosts, i, &host.worker_id)
                .await
                .into_iter()
                .next()
            {
                found = Some((run.id, (i + 1) % 3));
                break;
            }
        }
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no run started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut output = hosts[reader]
        .daemon
        .client
        .output(remote_run)
        .await
        .expect("output stream from another host");
    let text = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match output.next().await.expect("output item") {
                Some(loop_http::client::OutputItem::Chunk { text, .. })
                    if text.contains("task") =>
                {
                    return text;
                }
                Some(_) => {}
                None => panic!("the output stream ended before any agent output"),
            }
        }
    })
    .await
    .expect("agent output of a run on another host within 30 s");
    drop(output);
    eprintln!("hosts: live output of run {remote_run} read through another host: {text:?}");

    // Kill the owner of running runs several times; measure how long until another host's
    // agent works on each of its runs again.
    let mut takeovers: Vec<(u128, std::path::PathBuf)> = Vec::new();
    let mut kills = 0;
    let mut watched = Vec::new();
    let mut attempts = 0;
    while kills < 4 && attempts < 40 {
        attempts += 1;
        tokio::time::sleep(rng.between_ms(200, 900)).await;
        let victim = (rng.next() % 3) as usize;
        let asker = (victim + 1) % 3;
        let owned = running_on(&hosts, asker, &hosts[victim].worker_id).await;
        if owned.is_empty() {
            continue;
        }
        let at = wall_ns();
        signal(&hosts[victim].daemon.child, Signal::SIGKILL);
        let _ = hosts[victim].daemon.child.wait().await;
        kills += 1;
        watched.extend(live_agents(chaos.path()));
        eprintln!(
            "hosts: killed host {victim} at {at} owning {:?}",
            owned.iter().map(|r| r.id).collect::<Vec<_>>()
        );
        takeovers.extend(owned.into_iter().map(|r| (at, r.worktree_path)));
        // Back after the others had their chance to take over (they must not wait for it).
        tokio::time::sleep(Duration::from_millis(2 * TTL_SEC * 1000 + 500)).await;
        hosts[victim].restart().await;
    }
    assert!(
        kills >= 2,
        "too few kills hit a host with running runs ({kills})"
    );

    // Freeze one owner past its lease: the others take its run over; once thawed, its late
    // writes are refused and counted.
    let mut frozen = None;
    for _ in 0..100 {
        for (i, _) in hosts.iter().enumerate() {
            let owned = running_on(&hosts, (i + 1) % 3, &hosts[i].worker_id).await;
            if let Some(run) = owned.into_iter().next() {
                frozen = Some((i, run.id));
                break;
            }
        }
        if frozen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without a run to freeze the fencing check would be skipped: that is a failure.
    let (i, run_id) = frozen.expect("no host held a running run to freeze");
    signal(&hosts[i].daemon.child, Signal::SIGSTOP);
    let other = &hosts[(i + 1) % 3].daemon.client;
    let deadline = Instant::now() + Duration::from_secs(4 * TTL_SEC + 10);
    loop {
        let run = other.get_run(run_id).await.expect("run");
        if run.worker_id.as_deref() != Some(hosts[i].worker_id.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nobody took over the frozen host's run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the new owner's agent get going before the old one thaws.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&hosts[i].daemon.child, Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = hosts[i].daemon.client.health().await.expect("health");
        if health.fenced_writes_rejected > 0 {
            eprintln!(
                "hosts: the thawed host's late writes refused: {}",
                health.fenced_writes_rejected
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the thawed host's late writes were not refused and counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Everything finishes.
    let deadline = Instant::now() + Duration::from_secs(240);
    for id in &ids {
        loop {
            let run = hosts[2].daemon.client.get_run(*id).await.expect("run");
            if run.status.is_terminal() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} stuck in {:?}",
                run.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Every host lists every run.
    for host in &hosts {
        let listed: Vec<RunId> = host
            .daemon
            .client
            .list_runs(&ListQuery {
                limit: Some(1000),
                ..ListQuery::default()
            })
            .await
            .expect("list")
            .iter()
            .map(|r| r.id)
            .collect();
        for id in &ids {
            assert!(
                listed.contains(id),
                "host {} does not list run {id}",
                host.port
            );
        }
    }

    let mut events_checked = 0;
    for (n, (repo, id)) in repos.iter().zip(&ids).enumerate() {
        // Any host answers for any run: read each through another one.
        let client = &hosts[n % 3].daemon.client;
        let run = client.get_run(*id).await.expect("run");
        let name = log_name(&run.worktree_path);
        let agent_log =
            std::fs::read_to_string(chaos.path().join(format!("{name}.log"))).unwrap_or_default();
        assert_eq!(
            run.status,
            RunStatus::Completed,
            "run {id}: {:?}\n{agent_log}",
            run.failure
        );
        assert!(!agent_log.contains("OVERLAP"), "run {id}:\n{agent_log}");
        let mut events = client.events(*id, None).await.expect("events");
        let mut expected = 1;
        while let Some(ev) = events.next().await.expect("event") {
            assert_eq!(ev.seq, expected, "run {id}: gap or repeat in events");
            expected += 1;
        }
        events_checked += expected - 1;
        let log = repo.git(["log", "--format=%s", &run.run_branch]);
        for i in 1..=TASKS {
            let count = log
                .lines()
                .filter(|l| *l == format!("Implement: task {i}"))
                .count();
            assert_eq!(
                count, 1,
                "run {id}: task {i} committed {count} times:\n{log}"
            );
        }
    }
    for pid in &watched {
        assert!(
            !pid_alive(*pid),
            "an agent of a killed host is still alive: {pid}"
        );
    }

    // Another host's agent worked on each killed host's run within 2 × TTL (plus a little
    // for a loaded machine), unless the run had already finished.
    let mut worst = Duration::ZERO;
    let mut measured = 0;
    let kill_times: Vec<u128> = takeovers.iter().map(|(at, _)| *at).collect();
    let mut cascaded = 0;
    for (at, worktree) in &takeovers {
        if let Some(next) = agent_starts(chaos.path(), worktree)
            .into_iter()
            .find(|t| t > at)
        {
            // A later kill before the run's next agent (of the host that had taken it over,
            // say) starts another takeover: that one is measured from its own kill.
            if kill_times.iter().any(|k| k > at && *k < next) {
                cascaded += 1;
                continue;
            }
            let took = Duration::from_nanos(u64::try_from(next - at).unwrap_or(u64::MAX));
            if took > Duration::from_secs(2 * TTL_SEC) {
                eprintln!(
                    "hosts: slow takeover in {}: {took:?}; its agent log:\n{}",
                    worktree.display(),
                    std::fs::read_to_string(
                        chaos.path().join(format!("{}.log", log_name(worktree)))
                    )
                    .unwrap_or_default()
                );
            }
            worst = worst.max(took);
            measured += 1;
        }
    }
    eprintln!(
        "hosts (seed {seed:#x}): 3 hosts, {} runs, {kills} kill -9, {measured} takeovers measured ({cascaded} cut short by a later kill), \
         worst kill-to-next-agent {worst:?} (TTL {TTL_SEC} s), {events_checked} events checked, {:?}",
        ids.len(),
        started.elapsed()
    );
    assert!(
        worst <= Duration::from_millis(2 * TTL_SEC * 1000 + 1500),
        "a takeover took {worst:?}, more than 2 × TTL"
    );
    for host in &hosts {
        signal(&host.daemon.child, Signal::SIGTERM);
    }
    for host in &mut hosts {
        let _ = host.daemon.child.wait().await;
    }
}

/// A TCP proxy to `target` that can be stopped: stopping closes the listener and every
/// connection through it, as a network cut would.
struct Proxy {
    port: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listens");
        let port = listener.local_addr().expect("proxy address").port();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut stopped_accept = stopped.clone();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let target = target.clone();
                        let mut stopped = stopped.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = stopped.wait_for(|s| *s) => {}
                            }
                        });
                    }
                    _ = stopped_accept.wait_for(|s| *s) => return,
                }
            }
        });
        Self { port, stop }
    }

    fn cut(&self) {
        let _ = self.stop.send(true);
    }
}

/// `url` (postgres://user@host:port/db) with its host and port replaced by the proxy's, and
/// the host:port it named.
fn through_proxy(url: &str, port: u16) -> (String, String) {
    let at = url.rfind('@').expect("user@ in the url") + 1;
    let slash = at + url[at..].find('/').expect("/db in the url");
    let target = url[at..slash].to_owned();
    (
        format!("{}127.0.0.1:{port}{}", &url[..at], &url[slash..]),
        target,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_from_the_database_stops_its_agent_and_the_run_moves_on() {
    let test = "a_host_cut_from_the_database_stops_its_agent_and_the_run_moves_on";
    let Some(url) = database(test).await else {
        return;
    };
    let (_, target) = through_proxy(&url, 0);
    let proxy = Proxy::start(target).await;
    let (proxied, _) = through_proxy(&url, proxy.port);
    let chaos = tempfile::tempdir().expect("chaos dir");
    let repo = repo(chaos.path());

    // Host B (behind the proxy) takes the run; host A joins once B's agent is at work.
    let b = Host::new(&proxied).await;
    let id = b
        .daemon
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run
        .id;
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent = loop {
        if let Some(pid) = live_agents(chaos.path()).into_iter().next() {
            break pid;
        }
        assert!(Instant::now() < deadline, "host B's agent did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a = Host::new(&url).await;
    let run = a.daemon.client.get_run(id).await.expect("run");
    assert_eq!(run.worker_id.as_deref(), Some(b.worker_id.as_str()));

    proxy.cut();
    let cut = Instant::now();
    // B cannot renew: it kills its agent before the lease lapses.
    loop {
        if !pid_alive(agent) {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(TTL_SEC + 2),
            "host B's agent {agent} still alive {:?} after the cut",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_after = cut.elapsed();
    // A takes the run over and finishes it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut taken_after = None;
    loop {
        let run = a.daemon.client.get_run(id).await.expect("run");
        if taken_after.is_none() && run.worker_id.as_deref() == Some(a.worker_id.as_str()) {
            taken_after = Some(cut.elapsed());
        }
        if run.status.is_terminal() {
            assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
            break;
        }
        if Instant::now() >= deadline {
            let steps = a.daemon.client.steps(id).await.unwrap_or_default();
            panic!(
                "run stuck in {:?} held by {:?} (A {}, B {}); steps {:#?}\nA's log:\n{}\nB's log:\n{}",
                run.status,
                run.worker_id,
                a.worker_id,
                b.worker_id,
                steps
                    .iter()
                    .map(|s| (s.seq, s.status.clone(), s.reason.clone()))
                    .collect::<Vec<_>>(),
                a.log(),
                b.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = a.daemon.client.get_run(id).await.expect("run");
    let agent_log = std::fs::read_to_string(
        chaos
            .path()
            .join(format!("{}.log", log_name(&run.worktree_path))),
    )
    .unwrap_or_default();
    assert!(!agent_log.contains("OVERLAP"), "{agent_log}");
    let log = repo.git(["log", "--format=%s", &run.run_branch]);
    for i in 1..=TASKS {
        let count = log
            .lines()
            .filter(|l| *l == format!("Implement: task {i}"))
            .count();
        assert_eq!(count, 1, "task {i} committed {count} times:\n{log}");
    }
    eprintln!(
        "hosts: cut host stopped its agent {stopped_after:?} after the cut; the other host held the run after {taken_after:?} (TTL {TTL_SEC} s)"
    );
    for host in [&a, &b] {
        signal(&host.daemon.child, Signal::SIGTERM);
    }
    let (mut a, mut b) = (a, b);
    let _ = a.daemon.child.wait().await;
    let _ = b.daemon.child.wait().await;
}

/// An agent dies with its loopd (SPEC §14): after `kill -9` of the daemon, which is not
/// restarted (so no recovery kills anything), the agent it had started is gone within
/// moments: the kernel sent it the parent-death signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_dies_with_its_daemon() {
    let test = "an_agent_dies_with_its_daemon";
    if !Path::new("/usr/bin/setpriv").exists() && !Path::new("/bin/setpriv").exists() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: setpriv (util-linux) is not installed, agents get no parent-death signal"
        );
        return;
    }
    let chaos = tempfile::tempdir().expect("chaos dir");
    let repo = repo(chaos.path());
    let data = tempfile::tempdir().expect("data dir");
    let mut daemon = super::start(data.path(), free_port()).await;
    daemon
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created");
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent = loop {
        if let Some(pid) = live_agents(chaos.path()).into_iter().next() {
            break pid;
        }
        assert!(Instant::now() < deadline, "the agent did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    signal(&daemon.child, Signal::SIGKILL);
    let _ = daemon.child.wait().await;
    let killed = Instant::now();
    while pid_alive(agent) {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "agent {agent} outlived its daemon by {:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
