//! loopd: the agent-loop daemon. Wiring only: arguments, data dir, token, tracing, backends,
//! the engine's scheduler and the HTTP server, and signals for a clean shutdown.

mod trim;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use loop_engine::backend::QueueOrder;
use loop_engine::{Engine, EngineSettings};
use loop_http::server::{ServerOptions, serve};
use loop_store::{PgStore, SqliteStore};
use tokio_util::sync::CancellationToken;

/// The agent-loop daemon: runs coding-agent loops in git worktrees behind a localhost API.
#[derive(Debug, Parser)]
#[command(name = "loopd", version, about)]
struct Args {
    /// Address to listen on (loopback only unless --allow-remote).
    #[arg(long, env = "LOOPD_LISTEN", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Directory for the database, the artifact mirror and the token
    /// [default: $XDG_DATA_HOME/loopd or ~/.local/share/loopd].
    #[arg(long, env = "LOOPD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Allow listening on a non-loopback address (the token is then the only protection).
    #[arg(long)]
    allow_remote: bool,
    /// Runs executing at once (a run's own max_concurrency can only lower it).
    #[arg(long, env = "LOOPD_MAX_CONCURRENCY", default_value_t = 3)]
    max_concurrency: u32,
    /// Queue order of pending runs: fifo or newest_first.
    #[arg(long, env = "LOOPD_QUEUE_POLICY", default_value = "fifo")]
    queue_policy: String,
    /// Seconds running agents get to stop at shutdown.
    #[arg(long, default_value_t = 10)]
    stop_grace_sec: u64,
    /// The store: a SQLite database file [default: loopd.db in the data dir], or a
    /// PostgreSQL URL (postgres://user@host:port/db) that several loopd share (SPEC §14).
    #[arg(long, env = "LOOPD_STORE")]
    store: Option<String>,
    /// Seconds a claimed run's lease lasts; renewed every third of it. Another host takes
    /// over a run whose lease lapsed (its owner died or lost the database).
    #[arg(long, env = "LOOPD_LEASE_TTL_SEC", default_value_t = 30)]
    lease_ttl_sec: u64,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// This process's worker id: host, pid and start time, unique among the hosts sharing a
/// store and never reused by a later daemon.
fn worker_id() -> String {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{}:{}:{start}", host_name(), std::process::id())
}

/// The file in the data dir that holds the worker id of the daemon using it.
const WORKER_ID_FILE: &str = "worker-id";

/// The ids of earlier daemons on `data_dir` (we hold its lock, so they are dead): the last
/// one's, recorded in [`WORKER_ID_FILE`], and the `host:data dir` id of versions before
/// worker ids carried the pid. Their runs are recovered at once.
fn previous_worker_ids(data_dir: &Path) -> Vec<String> {
    let mut ids = vec![format!("{}:{}", host_name(), data_dir.display())];
    if let Ok(text) = std::fs::read_to_string(data_dir.join(WORKER_ID_FILE)) {
        let text = text.trim();
        if !text.is_empty() {
            ids.push(text.to_owned());
        }
    }
    ids
}

/// Which store `--store` names.
#[derive(Debug, PartialEq)]
enum StoreChoice {
    Sqlite(PathBuf),
    Postgres(String),
}

fn store_choice(store: Option<&str>, data_dir: &Path) -> anyhow::Result<StoreChoice> {
    match store {
        None => Ok(StoreChoice::Sqlite(data_dir.join("loopd.db"))),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(StoreChoice::Postgres(url.to_owned()))
        }
        Some("") => bail!("invalid --store ``: expected a SQLite file path or a postgres:// URL"),
        Some(other) if other.contains("://") => bail!(
            "invalid --store `{}`: only postgres:// URLs and SQLite file paths are supported",
            redact(other)
        ),
        Some(path) => Ok(StoreChoice::Sqlite(PathBuf::from(path))),
    }
}

/// `url` without its password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn shutdown_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop loopd with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    token.cancel();
}

/// Sets `path`'s permission bits to `mode` (owner-only modes).
fn make_private(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot make {} private (mode {mode:o})", path.display()))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = start(args) {
        // Plainly, whatever RUST_BACKTRACE says: these are user-facing errors (a busy port, a
        // held lock, a bad flag), not crashes. `main` returning the error would print its
        // Debug form, which carries a stack trace when RUST_BACKTRACE is set.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "loopd: {e:#}");
        std::process::exit(1);
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    // Every wake-up of a worker is activity; the heap is trimmed once the runtime has been
    // quiet for a moment (see `trim`), never while the daemon sits idle.
    let trimmer = Arc::new(trim::Trimmer::default());
    let runtime = {
        let trimmer = trimmer.clone();
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_unpark(move || trimmer.activity())
            .build()
            .context("cannot start the async runtime")?
    };
    trimmer
        .spawn(trim::QUIET, trim::release_free_heap)
        .context("cannot start the heap-trimming thread")?;
    runtime.block_on(serve_until_shutdown(args))
}

async fn serve_until_shutdown(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk) is dropped: the default
        // reports it with `eprintln!`, which panics on the same full disk and so killed
        // whatever thread logged, a run's driver or the database's worker (issue 12 item 1).
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "refusing to listen on {} (not a loopback address); pass --allow-remote to expose the API beyond this machine",
            args.listen
        );
    }
    let queue_policy = match args.queue_policy.as_str() {
        "fifo" => QueueOrder::Fifo,
        "newest_first" => QueueOrder::NewestFirst,
        other => bail!("invalid --queue-policy `{other}`: expected fifo or newest_first"),
    };
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => loop_http::auth::default_data_dir()
            .context("neither --data-dir, LOOPD_DATA_DIR, XDG_DATA_HOME nor HOME is set")?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    // The database, the token and the run mirror hold what agents printed: the owner's only.
    make_private(&data_dir, 0o700)?;
    // One daemon per data dir: the lock lives as long as the process.
    let lock_path = data_dir.join("loopd.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another loopd is already running with data dir {} (lock {} is held)",
            data_dir.display(),
            lock_path.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another loopd running there?)",
                args.listen
            )
        })?;
    let (token, generated) =
        loop_http::auth::load_or_create_token(&data_dir, std::env::var("LOOPD_TOKEN").ok())
            .with_context(|| {
                format!("cannot read or create the token in {}", data_dir.display())
            })?;
    if generated {
        tracing::info!(path = %loop_http::auth::token_path(&data_dir).display(), "generated a new API token");
    }
    match loop_engine::process::containment() {
        loop_engine::process::Containment::Cgroup => {
            tracing::info!(
                parent = %loop_engine::process::cgroup_parent().map(|p| p.display().to_string()).unwrap_or_default(),
                controllers = %loop_engine::process::controllers().join(","),
                "agents are contained in a cgroup each"
            );
        }
        loop_engine::process::Containment::ProcessGroup => {
            tracing::warn!(
                reason = loop_engine::process::fallback_reason().unwrap_or_default(),
                "no cgroup can be made for agents: they are contained by process group and /proc scanning"
            );
            // Orphans of agents then re-parent to loopd, where they stay findable.
            if let Err(e) = loop_engine::process::become_child_subreaper() {
                tracing::warn!(error = %e, "cannot become a child subreaper; orphaned agent tools may survive a cancel");
            }
        }
    }
    let store: Arc<dyn loop_engine::Store> = match store_choice(args.store.as_deref(), &data_dir)? {
        StoreChoice::Sqlite(path) => {
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("cannot open the database {}", path.display()))?;
            // SQLite gives its -wal and -shm files the database file's mode.
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let file = PathBuf::from(file);
                if file.exists() {
                    make_private(&file, 0o600)?;
                }
            }
            Arc::new(store)
        }
        StoreChoice::Postgres(url) => {
            let store = PgStore::connect(&url)
                .await
                .with_context(|| format!("cannot use the PostgreSQL store {}", redact(&url)))?;
            tracing::info!(store = %redact(&url), "using the shared PostgreSQL store");
            Arc::new(store)
        }
    };
    let previous_worker_ids = previous_worker_ids(&data_dir);
    let worker_id = worker_id();
    std::fs::write(data_dir.join(WORKER_ID_FILE), format!("{worker_id}\n"))
        .with_context(|| format!("cannot write {}", data_dir.join(WORKER_ID_FILE).display()))?;
    let engine = Engine::builder()
        .store_arc(store)
        .settings(EngineSettings {
            worker_id: worker_id.clone(),
            previous_worker_ids,
            max_concurrency: args.max_concurrency.max(1),
            queue_policy,
            lease: Duration::from_secs(args.lease_ttl_sec.max(1)),
            global_log_dir: Some(data_dir.clone()),
            stop_grace: Duration::from_secs(args.stop_grace_sec),
        })
        .build()?;
    // Said once at start-up rather than at the first step of every Claude run: such runs are
    // refused at creation (HTTP 400) with the same message until it is fixed.
    if let Some(problem) = loop_engine::engine::sandbox_problem() {
        tracing::warn!("{problem}; runs with executor=claude are refused until then");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    tracing::info!(%addr, data_dir = %data_dir.display(), %worker_id, "loopd listening");
    let scheduler = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run().await })
    };
    let server = serve(
        listener,
        engine.clone(),
        ServerOptions {
            token,
            allow_remote: args.allow_remote,
            ..ServerOptions::default()
        },
        shutdown.clone(),
    );
    let served = server.await;
    engine.shutdown();
    match scheduler.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "scheduler stopped with an error"),
        Err(e) => tracing::error!(error = %e, "scheduler task failed"),
    }
    drop(lock);
    served.context("server failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_choose_the_backend() {
        let dir = Path::new("/data");
        assert_eq!(
            store_choice(None, dir).unwrap(),
            StoreChoice::Sqlite(PathBuf::from("/data/loopd.db"))
        );
        assert_eq!(
            store_choice(Some("/var/lib/x.db"), dir).unwrap(),
            StoreChoice::Sqlite(PathBuf::from("/var/lib/x.db"))
        );
        assert_eq!(
            store_choice(Some("postgres://u@h:5432/db"), dir).unwrap(),
            StoreChoice::Postgres("postgres://u@h:5432/db".into())
        );
        let err = store_choice(Some("mysql://u:secret@h/db"), dir).unwrap_err();
        assert!(err.to_string().contains("mysql://u:***@h/db"), "{err}");
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn worker_ids_name_host_pid_and_start() {
        let id = worker_id();
        let parts: Vec<&str> = id.rsplitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[1], std::process::id().to_string());
        assert!(parts[0].parse::<u128>().is_ok(), "{id}");
    }
}
