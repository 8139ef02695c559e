//! The built-in notifiers through the real daemon (issue 14 item 5): `notify-send` found on
//! loopd's `PATH` (a stand-in script that records its arguments), the webhook signed with a
//! secret read from loopd's environment (`env:NAME`), and `notify_cmd` fed the JSON.

use std::time::Duration;

use loop_engine::domain::RunStatus;
use loop_engine::impls::notify::signature_header;
use loop_engine::testing::WebhookReceiver;

use super::{create_request, free_port, repo_with_agent, start_with_env, wait_terminal};

async fn wait_for_file(path: &std::path::Path) -> String {
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} was never written", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_webhook_and_cmd_tell_of_a_run_through_the_daemon() {
    let data = tempfile::tempdir().expect("data dir");
    let out = tempfile::tempdir().expect("out dir");
    let bin = out.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let desktop = out.path().join("desktop.txt");
    let stand_in = bin.join("notify-send");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> {}\n",
            desktop.display()
        ),
    )
    .expect("stand-in");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = free_port();
    let daemon = start_with_env(
        data.path(),
        port,
        &[("PATH", &path), ("LOOP_TEST_HOOK_SECRET", "from-the-env")],
    )
    .await;
    let hook = WebhookReceiver::start([]).await;
    let cmd_out = out.path().join("cmd.json");
    let (repo, _script) = repo_with_agent(1);
    let mut req = create_request(&repo);
    let overrides = serde_json::json!({
        "notify_desktop": true,
        "notify_webhook_url": hook.url("/hook"),
        "notify_webhook_secret": "env:LOOP_TEST_HOOK_SECRET",
        "notify_cmd": format!("cat > {}", cmd_out.display()),
    });
    req.config_override = overrides.as_object().cloned();
    let created = daemon.client.create_run(&req).await.expect("run created");
    let id = created.run.id;
    assert_eq!(
        wait_terminal(&daemon.client, id).await,
        RunStatus::Completed
    );

    let args = wait_for_file(&desktop).await;
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(lines[0], "--app-name=agent-loop", "{args}");
    assert_eq!(lines[1], "--urgency=normal", "{args}");
    assert_eq!(lines[2], "agent-loop: widget completed", "{args}");
    assert!(lines[3].starts_with("1/1 tasks done"), "{args}");

    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "one webhook call");
    assert_eq!(
        got[0].header("x-loop-signature"),
        Some(signature_header(b"from-the-env", &got[0].body).as_str()),
        "signed with the secret from loopd's environment"
    );
    assert_eq!(got[0].json()["run_id"], id.to_string());

    let stdin: serde_json::Value =
        serde_json::from_str(&wait_for_file(&cmd_out).await).expect("JSON on stdin");
    assert_eq!(stdin, got[0].json());
    // The stored config never carries the secret itself.
    let run = daemon.client.get_run(id).await.expect("run");
    let shown = serde_json::to_string(&run).expect("json");
    assert!(!shown.contains("from-the-env"), "{shown}");
}
