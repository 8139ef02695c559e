//! The accept loop: one task per connection, graceful shutdown, and the server's options.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use loop_engine::Engine;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::server::auth::Guard;
use crate::server::routes::{self, State};

/// How long open connections may finish their current request after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to send the request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Options of [`serve`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The bearer token every route but `GET /health` requires. Must not be empty.
    pub token: String,
    /// Accept requests whose `Host` is not a loopback name (the daemon was bound beyond
    /// loopback on purpose). `Origin` is checked regardless.
    pub allow_remote: bool,
    /// Largest accepted request body (default 1 MiB).
    pub max_body_bytes: usize,
    /// Interval of SSE keep-alive comments on idle streams (default 15 s).
    pub keepalive: Duration,
}

impl Default for ServerOptions {
    /// The defaults with an empty token, which [`serve`] refuses: set one.
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl ServerOptions {
    /// Options with `token` and the defaults: loopback only, 1 MiB bodies, 15 s keep-alive.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            allow_remote: false,
            max_body_bytes: 1024 * 1024,
            keepalive: Duration::from_secs(15),
        }
    }
}

/// Serves the control plane on `listener` until `shutdown` fires: then it stops accepting,
/// ends SSE streams, and gives open connections a short grace to finish.
///
/// Fails at once when the token is empty or the listener has no local address.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    opts: ServerOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    if opts.token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the server needs a non-empty token",
        ));
    }
    let local = listener.local_addr()?;
    let state = Arc::new(State {
        engine,
        guard: Guard {
            token: opts.token.clone(),
            allow_remote: opts.allow_remote,
            listen: local,
        },
        opts,
        shutdown: shutdown.clone(),
        sessions: crate::dash::Sessions::default(),
    });
    tracing::info!(addr = %local, "control plane listening");
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(connection(state.clone(), stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "connections still open after the shutdown grace; closing them"
        );
        conns.abort_all();
    }
    tracing::info!(addr = %local, "control plane stopped");
    Ok(())
}

async fn connection(
    state: Arc<State>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(routes::handle(state, req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
