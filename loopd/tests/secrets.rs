//! Agents and verification commands get an allow-listed environment plus `agent_env`, never
//! loopd's token; the data dir, the database, run folders, logs and the mirror are private.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use loop_engine::domain::RunStatus;
use loop_engine::process::Cmd;
use loop_engine::testing::GitFixture;
use loop_http::Client;

use super::{Daemon, TOKEN, create_request, free_port, signal, wait_terminal};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_commands_never_see_the_token_and_run_files_are_private() {
    let repo = GitFixture::new();
    let out = repo.root().join("env-out");
    std::fs::create_dir_all(&out).expect("dir");
    let script = repo.root().join("agent.sh");
    std::fs::write(
        &script,
        format!(
            "set -e\nenv > {out}/agent.env\nenv\nplan=specs/planning/widget-plan.md\n\
             sed -i '0,/- \\[ \\]/s//- [x]/' \"$plan\"\ngit add -A\n\
             git -c user.name=agent -c user.email=agent@localhost commit -qm 'agent: a task'\n\
             echo '<promise>COMPLETE</promise>'\n",
            out = out.display()
        ),
    )
    .expect("script");
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=mirror\nexecutor=command\n\
             agent_cmd=sh {}\nverify_cmds=env > {}/verify.env\n\
             agent_env=LOOP_TEST_PASSED LOOP_TEST_MODE=fast\n",
            script.display(),
            out.display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file("specs/planning/widget-plan.md", "- [ ] task 1\n");
    repo.commit_all("spec and plan");

    let data = tempfile::tempdir().expect("tempdir");
    let data = data.path().join("loopd-data");
    let port = free_port();
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_loopd"), repo.root())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .env("LOOPD_TOKEN", TOKEN)
        .env("LOOPD_OTHER_SECRET", "daemon-only")
        .env("LOOP_TEST_PASSED", "passed-through")
        .env("LOOP_TEST_NOT_LISTED", "hidden")
        .env("RUST_LOG", "warn")
        .to_tokio();
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn().expect("loopd starts");
    let client =
        Client::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN.into())).expect("client");
    client
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    let mut daemon = Daemon { child, client };

    let run = daemon
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run;
    let status = wait_terminal(&daemon.client, run.id).await;
    assert_eq!(status, RunStatus::Completed);

    for file in ["agent.env", "verify.env"] {
        let env = std::fs::read_to_string(out.join(file)).expect("env written");
        assert!(!env.contains(TOKEN), "{file} holds the token:\n{env}");
        assert!(
            !env.contains("LOOPD_"),
            "{file} holds a LOOPD_ variable:\n{env}"
        );
        assert!(!env.contains("LOOP_TEST_NOT_LISTED"), "{file}:\n{env}");
        assert!(
            env.lines().any(|l| l == "LOOP_TEST_PASSED=passed-through"),
            "{file}:\n{env}"
        );
        assert!(
            env.lines().any(|l| l == "LOOP_TEST_MODE=fast"),
            "{file}:\n{env}"
        );
        assert!(
            env.lines().any(|l| l.starts_with("PATH=")),
            "{file}:\n{env}"
        );
        assert!(
            env.lines().any(|l| l == format!("LOOP_RUN_ID={}", run.id)),
            "{file}:\n{env}"
        );
    }

    // Everything of the run is the owner's only: folders 0700, files 0600, both copies.
    let folder = repo.path().join(format!("logs/loop/run-{}", run.id));
    let mirror = data.join(format!("runs/run-{}", run.id));
    for dir in [&folder, &mirror] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        let mut files = 0;
        for entry in std::fs::read_dir(dir).expect("listing") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                files += 1;
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                let text = std::fs::read(&path).expect("read");
                assert!(
                    !String::from_utf8_lossy(&text).contains(TOKEN),
                    "{} holds the token",
                    path.display()
                );
            } else if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
            }
        }
        assert!(files >= 4, "{} has its files", dir.display());
    }
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("loopd.db")), 0o600);

    signal(&daemon.child, nix::sys::signal::Signal::SIGTERM);
    daemon.child.wait().await.expect("exits");
}
