//! The official Python `kubernetes` client (PyPI) against the standalone API server: what a
//! Python operator or script does (typed CRUD, patches, selectors, a watch, error codes) works
//! unchanged. The checks themselves are in `tests/python/client_test.py`.

mod common;

use std::process::Command;

/// The client version CI installs (`.ci/run`); any recent one works with Python 3.11.
const PIP_INSTALL: &str = "python3 -m pip install kubernetes==37.0.2";

#[test]
fn python_kubernetes_client() {
    // Fail loudly, never skip: a machine without the module would otherwise pass unchecked.
    match Command::new("python3")
        .args(["-c", "import kubernetes; print(kubernetes.__version__)"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test needs the Python kubernetes client; install it with `{PIP_INSTALL}`:\n{}",
            common::text(&out)
        ),
        Err(e) => panic!("this test needs python3 on PATH ({e}); then `{PIP_INSTALL}`"),
    }
    let server = common::ApiServer::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(server.sandbox.kubeconfig())
        .env("HOME", server.sandbox.path())
        .output()
        .expect("cannot run python3");
    assert!(
        out.status.success(),
        "the Python client checks failed:\n{}",
        common::text(&out)
    );
    println!("{}", common::stdout(&out));
}
