//! The dashboard at scale (issue 15): a store of 10,000 finished runs (1,000 with `--quick`)
//! behind the real loopd, then the run list's server time (the first page of 50, a later page,
//! filters, a text search) over one kept-alive loopback connection, and the first contentful
//! paint of that page measured in headless Chromium over WebDriver.

use std::time::Instant;

use anyhow::{Context, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use loop_store::SqliteStore;

use crate::Ctx;
use crate::harness::{Daemon, TOKEN, median, ms};
use crate::report::Report;

/// One kept-alive HTTP/1.1 connection to loopd with the dashboard's session cookie.
struct Http {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    cookie: String,
}

impl Http {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let host = url.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut http = Self {
            sender,
            host,
            cookie: String::new(),
        };
        // Log in like the browser's form does.
        let origin = format!("http://{}", http.host);
        let (status, headers, _) = http
            .send(
                "POST",
                "/login",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("origin", &origin),
                ],
                format!("token={TOKEN}"),
            )
            .await?;
        ensure!(status == 303, "login answered {status}");
        let set = headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .context("login set no cookie")?;
        http.cookie = set.split(';').next().unwrap_or_default().to_owned();
        Ok(http)
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> anyhow::Result<(u16, hyper::HeaderMap, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if !self.cookie.is_empty() {
            req = req.header("cookie", &self.cookie);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, headers, body))
    }

    /// Median milliseconds of `reps` GETs of `path` (request sent to last byte read), and
    /// the last page's size in bytes.
    async fn time_get(&mut self, path: &str, reps: usize) -> anyhow::Result<(f64, usize)> {
        let mut times = Vec::with_capacity(reps);
        let mut size = 0;
        for _ in 0..reps {
            let started = Instant::now();
            let (status, _, body) = self.send("GET", path, &[], String::new()).await?;
            times.push(ms(started.elapsed()));
            ensure!(status == 200, "GET {path} answered {status}");
            size = body.len();
        }
        Ok((median(&times), size))
    }
}

/// The first contentful paint of the list page in headless Chromium, median of `reps` loads
/// (`None` and the reason when Chromium is not installed).
async fn paint(
    ctx: &Ctx,
    url: &str,
    cookie: &str,
    reps: usize,
) -> anyhow::Result<Result<(f64, f64), String>> {
    let (chromium, driver) = match webdriver_lite::find_browser() {
        Ok(found) => found,
        Err(why) => return Ok(Err(why)),
    };
    let profile = ctx.tmp.path().join("dash-browser/profile");
    std::fs::create_dir_all(&profile)?;
    let b = webdriver_lite::Browser::start(&chromium, &driver, &profile).await;
    b.resize(1280, 800).await;
    b.goto(&format!("{url}/ui/assets/dash.css")).await;
    let (name, value) = cookie.split_once('=').context("a name=value cookie")?;
    b.add_cookie(name, value).await;
    let mut fcp = Vec::new();
    let mut loaded = Vec::new();
    for _ in 0..reps {
        b.goto(&format!("{url}/")).await;
        let v = b
            .wait_for(
                "the paint timing of the list",
                10,
                "var p = performance.getEntriesByName('first-contentful-paint')[0]; \
                 var n = performance.getEntriesByType('navigation')[0]; \
                 return p && n && document.querySelectorAll('#runs tbody tr').length > 0 && [p.startTime, n.loadEventEnd || n.domContentLoadedEventEnd];",
            )
            .await;
        let pair = v.as_array().context("two numbers")?;
        fcp.push(pair.first().and_then(|x| x.as_f64()).context("fcp")?);
        loaded.push(pair.get(1).and_then(|x| x.as_f64()).context("load")?);
    }
    Ok(Ok((median(&fcp), median(&loaded))))
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let runs = if ctx.quick { 1000 } else { 10_000 };
    let data = ctx.tmp.path().join("dash-data");
    std::fs::create_dir_all(&data)?;
    crate::say(&format!("dash: filling {runs} runs"));
    let store = SqliteStore::open(&data.join("loopd.db")).await?;
    let mut ids = Vec::new();
    crate::scale::fill(&store, 0, runs, runs * 10, 10, &mut ids).await?;
    store.close().await;
    let daemon = Daemon::start(&ctx.bins, &data, &[]).await?;
    let result = measure(ctx, report, &daemon.url, runs, &ids).await;
    daemon.stop().await?;
    result
}

async fn measure(
    ctx: &Ctx,
    report: &mut Report,
    url: &str,
    runs: usize,
    ids: &[loop_engine::domain::RunId],
) -> anyhow::Result<()> {
    let mut http = Http::connect(url).await?;
    let reps = ctx.reps.max(3) * 4;
    // Warm up the connection and the store's caches.
    http.time_get("/", 2).await?;
    let (first, size) = http.time_get("/", reps).await?;
    ensure!(size > 0, "the list page is empty");
    report.at_most(
        "dash",
        &format!("run list, first page of 50, {runs} runs (server)"),
        first,
        100.0,
        "ms",
    );
    let middle = ids.get(ids.len() / 2).context("runs were filled")?;
    let (later, _) = http.time_get(&format!("/?before={middle}"), reps).await?;
    report.info(
        "dash",
        &format!("run list, a page in the middle, {runs} runs"),
        format!("{later:.1} ms"),
    );
    let (filtered, _) = http
        .time_get("/?workspace=/bench/ws-3&status=COMPLETED", reps)
        .await?;
    report.info(
        "dash",
        &format!("run list, workspace + status filter, {runs} runs"),
        format!("{filtered:.1} ms"),
    );
    let (text, _) = http.time_get("/?q=history-1234", reps.min(5)).await?;
    report.info(
        "dash",
        &format!("run list, text search over all {runs} runs"),
        format!("{text:.1} ms"),
    );
    let (rows, _) = http.time_get("/ui/rows", reps).await?;
    report.info(
        "dash",
        "live rows refresh (/ui/rows, every second per open list)",
        format!("{rows:.1} ms"),
    );
    report.info("dash", "list page size", format!("{} KiB", size / 1024));
    match paint(ctx, url, &http.cookie, ctx.reps.max(3)).await? {
        Ok((fcp, load)) => {
            report.at_most(
                "dash",
                &format!("first contentful paint of the list in Chromium, {runs} runs"),
                fcp,
                1000.0,
                "ms",
            );
            report.info(
                "dash",
                "list page loaded (load event) in Chromium",
                format!("{load:.0} ms"),
            );
        }
        Err(why) => report.info(
            "dash",
            "first contentful paint in Chromium",
            format!("not measured: {why}"),
        ),
    }
    Ok(())
}
